//! The closing-the-loop tracker as senior leadership's bi-monthly digest shows it: unclosed
//! actions by service and team, oldest first, Inadequate audits without a verified action
//! plan, and the counts with the change since the last digest.
//!
//! **Invariant:** pure, and minimal like every message: action ids, owners' staff ids, dates and
//! links — never an action's free-text description (it may name a case detail).

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::domain::{Action, ActionState};
use crate::org::Org;

/// The digest's actions section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionsSection {
    /// Open actions past their due date.
    pub overdue: u32,
    /// Done actions waiting for verification.
    pub unverified: u32,
    /// The same counts at the previous digest (None for the first).
    pub previous_overdue: Option<u32>,
    /// See `previous_overdue`.
    pub previous_unverified: Option<u32>,
    /// Overdue and unverified actions by service, then team, oldest first.
    pub groups: Vec<ActionGroup>,
    /// Audits graded Inadequate whose actions are not all verified (or that raised none).
    pub inadequate_without_plan: Vec<AuditLine>,
    /// The tracker page.
    pub tracker_link: String,
}

/// One service's unclosed actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionGroup {
    /// Service name (the owner's, from the staff file).
    pub service: String,
    /// Lines in the service.
    pub count: u32,
    /// Its teams.
    pub teams: Vec<ActionTeam>,
}

/// One team's unclosed actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTeam {
    /// Team name.
    pub team: String,
    /// Oldest due first.
    pub lines: Vec<ActionLine>,
}

/// One unclosed action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionLine {
    /// Action id.
    pub id: i64,
    /// Owner's staff id.
    pub owner: String,
    /// Owner's name.
    #[serde(default)]
    pub owner_name: String,
    /// `overdue` or `unverified`.
    pub status: String,
    /// Due date, `YYYY-MM-DD`.
    pub due: String,
    /// Working days overdue (for `overdue`) or waiting for verification (for `unverified`).
    pub days: u32,
    /// Raised from an audit graded Inadequate.
    pub inadequate: bool,
    /// Times reopened.
    pub reopened: u32,
}

/// An Inadequate audit without a verified action plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    /// The audit's assignment id.
    pub assignment_id: i64,
    /// The auditor's staff id.
    pub auditor: String,
    /// The auditor's name.
    #[serde(default)]
    pub auditor_name: String,
    /// Actions it raised.
    pub actions: u32,
    /// Of which verified.
    pub verified: u32,
    /// The audit's page.
    pub link: String,
}

/// An audit graded Inadequate, as the digest needs it: (assignment id, auditor's staff id).
pub type InadequateAudit = (i64, String);

/// A person's name from the staff file (current or past); someone qaloop never knew reads as
/// "someone no longer on the staff list", never as an id.
fn name_of(org: &Org, staff_id: &str) -> String {
    org.get(staff_id)
        .map(|p| p.record.name.clone())
        .unwrap_or_else(|| "someone no longer on the staff list".to_owned())
}

/// Builds the section on `today` from every action and the Inadequate audits.
#[allow(clippy::too_many_arguments)]
pub fn actions_section(
    calendar: &Calendar,
    tz: &jiff::tz::TimeZone,
    org: &Org,
    actions: &[Action],
    inadequate_audits: &[InadequateAudit],
    today: Date,
    previous: Option<(u32, u32)>,
    base_url: &str,
) -> ActionsSection {
    let mut lines: Vec<(Date, ActionLine, String, String)> = Vec::new();
    let (mut overdue, mut unverified) = (0, 0);
    for a in actions {
        let (status, days, since) = match a.state {
            ActionState::Open if a.due < today => {
                overdue += 1;
                (
                    "overdue",
                    calendar.working_days_between(a.due, today),
                    a.due,
                )
            }
            ActionState::Done => {
                unverified += 1;
                let since = a.done_at.map(|t| t.to_zoned(tz.clone()).date());
                let since = since.unwrap_or(today);
                (
                    "unverified",
                    calendar.working_days_between(since, today),
                    a.due,
                )
            }
            _ => continue,
        };
        let (service, team) = org
            .get(&a.owner)
            .map(|p| (p.record.service.clone(), p.record.team.clone()))
            .unwrap_or_else(|| ("Former staff".to_owned(), name_of(org, &a.owner)));
        lines.push((
            since,
            ActionLine {
                id: a.id,
                owner: a.owner.clone(),
                owner_name: name_of(org, &a.owner),
                status: status.to_owned(),
                due: a.due.to_string(),
                days,
                inadequate: a.inadequate,
                reopened: a.reopened,
            },
            service,
            team,
        ));
    }
    lines.sort_by_key(|x| (x.0, x.1.id));
    let mut services: BTreeMap<String, BTreeMap<String, Vec<ActionLine>>> = BTreeMap::new();
    for (_, line, service, team) in lines {
        services
            .entry(service)
            .or_default()
            .entry(team)
            .or_default()
            .push(line);
    }
    let groups = services
        .into_iter()
        .map(|(service, teams)| ActionGroup {
            count: teams.values().map(|t| t.len() as u32).sum(),
            service,
            teams: teams
                .into_iter()
                .map(|(team, lines)| ActionTeam { team, lines })
                .collect(),
        })
        .collect();
    let inadequate_without_plan = inadequate_audits
        .iter()
        .filter_map(|(id, auditor)| {
            let raised: Vec<&Action> = actions
                .iter()
                .filter(|a| a.assignment_id == Some(*id))
                .collect();
            let verified = raised
                .iter()
                .filter(|a| a.state == ActionState::Verified)
                .count() as u32;
            (raised.is_empty() || verified < raised.len() as u32).then(|| AuditLine {
                assignment_id: *id,
                auditor: auditor.clone(),
                auditor_name: name_of(org, auditor),
                actions: raised.len() as u32,
                verified,
                link: format!("{base_url}/assignments/{id}"),
            })
        })
        .collect();
    ActionsSection {
        overdue,
        unverified,
        previous_overdue: previous.map(|p| p.0),
        previous_unverified: previous.map(|p| p.1),
        groups,
        inadequate_without_plan,
        tracker_link: format!("{base_url}/tracker"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActionSource;
    use crate::org::StaffRecord;
    use jiff::Timestamp;
    use jiff::civil::date;

    fn record(id: &str, team: &str, service: &str) -> StaffRecord {
        StaffRecord {
            staff_id: id.into(),
            name: format!("Person {id}"),
            email: format!("{id}@x.test"),
            roles: ["practitioner".to_owned()].into_iter().collect(),
            line_manager_id: None,
            team: team.into(),
            service: service.into(),
            locality: String::new(),
            chat_id: None,
            start_date: None,
        }
    }

    fn action(id: i64, owner: &str, due: Date, state: ActionState, audit: i64) -> Action {
        Action {
            id,
            source: ActionSource::Audit,
            assignment_id: Some(audit),
            description: "never shown in a digest".into(),
            owner: owner.into(),
            raised_by: "TM".into(),
            due,
            inadequate: audit == 100,
            state,
            reopened: 0,
            created_at: Timestamp::UNIX_EPOCH,
            done_at: (state == ActionState::Done).then(|| "2027-06-07T12:00:00Z".parse().unwrap()),
            verified_at: None,
            verified_by: None,
        }
    }

    /// A hand-computed fixture: on Monday 14 June 2027, P1 (CP, South 1) has two overdue
    /// actions (due Fri 4 June: 6 working days; due Wed 9 June: 3) and P2 (Early Help, North 1)
    /// one done on Mon 7 June awaiting verification (5 working days) and one open not yet due;
    /// one action is verified. Audit 100 (Inadequate) has an unverified action; audit 200
    /// (Inadequate) has only verified ones; audit 300 (Inadequate) raised none.
    #[test]
    fn the_digest_section_matches_the_hand_computed_fixture() {
        let org = Org::from_records([
            record("P1", "South 1", "Child Protection"),
            record("P2", "North 1", "Early Help"),
        ]);
        let actions = [
            action(1, "P1", date(2027, 6, 9), ActionState::Open, 100),
            action(2, "P1", date(2027, 6, 4), ActionState::Open, 150),
            action(3, "P2", date(2027, 6, 30), ActionState::Done, 150),
            action(4, "P2", date(2027, 6, 30), ActionState::Open, 150),
            action(5, "P2", date(2027, 6, 1), ActionState::Verified, 200),
        ];
        let audits = [
            (100, "TM".to_owned()),
            (200, "TM".to_owned()),
            (300, "TM2".to_owned()),
        ];

        let section = actions_section(
            &crate::calendar::shipped_for_tests(),
            &jiff::tz::TimeZone::get("Europe/London").unwrap(),
            &org,
            &actions,
            &audits,
            date(2027, 6, 14),
            Some((5, 0)),
            "https://qa.example",
        );

        assert_eq!((section.overdue, section.unverified), (2, 1));
        assert_eq!(section.previous_overdue, Some(5));
        let services: Vec<(&str, u32)> = section
            .groups
            .iter()
            .map(|g| (g.service.as_str(), g.count))
            .collect();
        assert_eq!(services, [("Child Protection", 2), ("Early Help", 1)]);
        let cp: Vec<(i64, &str, u32)> = section.groups[0].teams[0]
            .lines
            .iter()
            .map(|l| (l.id, l.status.as_str(), l.days))
            .collect();
        assert_eq!(cp, [(2, "overdue", 6), (1, "overdue", 3)], "oldest first");
        let eh = &section.groups[1].teams[0].lines[0];
        assert_eq!((eh.id, eh.status.as_str(), eh.days), (3, "unverified", 5));
        let audits: Vec<(i64, u32, u32)> = section
            .inadequate_without_plan
            .iter()
            .map(|a| (a.assignment_id, a.actions, a.verified))
            .collect();
        assert_eq!(audits, [(100, 1, 0), (300, 0, 0)]);
        let json = serde_json::to_string(&section).unwrap();
        assert!(!json.contains("never shown"), "no free text in a message");
    }
}
