//! Who may do what to a piece of work: one function for every edge.
//!
//! The CLI, the signed-link pages and any later API translate a request into an [`Actor`] and
//! an [`Operation`] and ask [`authorise`]; none of them carries a rule of its own.

use std::fmt;

use serde::{Serialize, Serializer};

use super::assignee::Assignee;
use super::assignment::{Assignment, Status};
use crate::org::Org;

/// The edge a change came through, recorded in every history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A `qaloop` command on the server.
    Cli,
    /// A signed link from a message.
    Link,
    /// The HTTP API.
    Api,
    /// qaloop itself (reconcile, a leaver's hand-over).
    System,
}

impl Via {
    /// The database and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Cli => "cli",
            Via::Link => "link",
            Via::Api => "api",
            Via::System => "system",
        }
    }

    /// Parses the database spelling; `None` for anything qaloop does not write.
    pub fn parse(text: &str) -> Option<Via> {
        [Via::Cli, Via::Link, Via::Api, Via::System]
            .into_iter()
            .find(|v| v.as_str() == text)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Via {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Who is acting, and through which edge: what every write records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The person's staff id (or `system:…` for qaloop itself).
    pub staff_id: String,
    /// The edge.
    pub via: Via,
}

impl Actor {
    /// A person acting through `via`.
    pub fn new(staff_id: impl Into<String>, via: Via) -> Actor {
        Actor {
            staff_id: staff_id.into(),
            via,
        }
    }

    /// qaloop itself, with a reason in the id (`system:reconcile`, `system:staff-import`).
    pub fn system(what: &str) -> Actor {
        Actor::new(format!("system:{what}"), Via::System)
    }
}

/// What someone wants to do to a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Open it and read it (its page, its record).
    View,
    /// Mark it done (submit its form).
    Complete,
    /// Give it to someone else.
    Reassign,
    /// Withdraw it.
    Cancel,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::View => "open",
            Operation::Complete => "complete",
            Operation::Reassign => "reassign",
            Operation::Cancel => "cancel",
        }
    }
}

/// Why [`authorise`] said no. The message names who, what and who may instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The actor is not a current member of staff.
    #[error("`{0}` is not a current member of staff")]
    UnknownPerson(String),
    /// The work is done or cancelled: nothing but viewing is possible.
    #[error("assignment {id} is already {}", status.as_str())]
    NotOpen {
        /// The assignment.
        id: i64,
        /// Where it stands.
        status: Status,
    },
    /// Triggered work about someone's own work (a moderation of their audit): they may not
    /// complete it, whoever they are (an admin included) — review needs a second person.
    #[error(
        "{by} may not complete assignment {id}: it reviews their own work, so someone else must (the auditor never moderates their own audit)"
    )]
    OwnWork {
        /// The assignment.
        id: i64,
        /// Who tried.
        by: String,
    },
    /// They may not.
    #[error("{by} may not {} assignment {id} (held by {assignee}): {who_may}", operation.verb())]
    NotAllowed {
        /// The assignment.
        id: i64,
        /// Who tried.
        by: String,
        /// Who holds it.
        assignee: Assignee,
        /// What they tried.
        operation: Operation,
        /// Who may, in words.
        who_may: &'static str,
    },
}

/// Decides whether `by` may do `operation` to `assignment`.
///
/// The rules, in one place:
/// - **view** and **complete**: the assignee, a holder of the owning role, anyone above the
///   assignee in line management, or a holder of the admin role;
/// - **reassign**: a holder of the admin role, or a manager above the (personal) assignee;
/// - **cancel**: a holder of the admin role.
///
/// Only current staff may act; only open work may be changed (viewing done work is allowed,
/// so a link to finished work shows who finished it). Nobody completes triggered work whose
/// subject they are (a moderation of their own audit).
pub fn authorise(
    org: &Org,
    admin_role: &str,
    assignment: &Assignment,
    by: &str,
    operation: Operation,
) -> Result<(), Refusal> {
    let Some(person) = org.get(by).filter(|p| p.is_current()) else {
        return Err(Refusal::UnknownPerson(by.to_owned()));
    };
    if operation != Operation::View && assignment.status != Status::Open {
        return Err(Refusal::NotOpen {
            id: assignment.id,
            status: assignment.status,
        });
    }
    if operation == Operation::Complete && assignment.subject.as_deref() == Some(by) {
        return Err(Refusal::OwnWork {
            id: assignment.id,
            by: by.to_owned(),
        });
    }
    let admin = person.holds(admin_role);
    let above = assignment
        .assignee
        .staff_id()
        .is_some_and(|id| org.is_above(by, id));
    let (allowed, who_may) = match operation {
        Operation::View | Operation::Complete => (
            admin || above || assignment.assignee.is_held_by(person),
            "only the assignee, a holder of its role, someone above the assignee in line \
             management, or a QA admin may",
        ),
        Operation::Reassign => (
            admin || above,
            "only a QA admin or a manager above the assignee may",
        ),
        Operation::Cancel => (admin, "only a QA admin may"),
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::NotAllowed {
            id: assignment.id,
            by: by.to_owned(),
            assignee: assignment.assignee.clone(),
            operation,
            who_may,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Assignment;
    use crate::org::StaffRecord;
    use jiff::civil::date;

    fn record(id: &str, roles: &[&str], manager: Option<&str>) -> StaffRecord {
        StaffRecord {
            staff_id: id.into(),
            name: format!("Person {id}"),
            email: format!("{id}@x.test"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            line_manager_id: manager.map(Into::into),
            team: String::new(),
            service: String::new(),
            locality: String::new(),
            chat_id: None,
            start_date: None,
        }
    }

    /// HOS → SL → TM1, TM2; QA is an admin; PU holds the performance unit role.
    fn org() -> Org {
        Org::from_records([
            record("HOS", &["head_of_service"], None),
            record("SL", &["service_lead"], Some("HOS")),
            record("TM1", &["team_manager"], Some("SL")),
            record("TM2", &["team_manager"], Some("SL")),
            record("QA", &["qa_admin"], None),
            record("PU", &["performance_unit"], None),
        ])
    }

    fn work(assignee: &str, status: Status) -> Assignment {
        Assignment {
            id: 7,
            activity_id: "file-audit".into(),
            period_label: "2027-05".into(),
            period_start: date(2027, 5, 1),
            period_end: date(2027, 5, 31),
            slot: assignee.into(),
            assignee: Assignee::parse(assignee),
            subject: None,
            trigger_id: None,
            due: date(2027, 5, 28),
            status,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            created_late: false,
            before_go_live: false,
            completed_at: None,
            completed_by: None,
            note: None,
        }
    }

    fn may(by: &str, assignee: &str, operation: Operation) -> bool {
        authorise(
            &org(),
            "qa_admin",
            &work(assignee, Status::Open),
            by,
            operation,
        )
        .is_ok()
    }

    #[test]
    fn completion_is_for_the_holder_their_managers_and_admins() {
        assert!(may("TM1", "TM1", Operation::Complete));
        assert!(may("SL", "TM1", Operation::Complete), "line manager");
        assert!(may("HOS", "TM1", Operation::Complete), "manager's manager");
        assert!(may("QA", "TM1", Operation::Complete), "admin");
        assert!(!may("TM2", "TM1", Operation::Complete), "a peer may not");
        assert!(!may("TM1", "SL", Operation::Complete), "nor someone below");
        assert!(may("PU", "role:performance_unit", Operation::Complete));
        assert!(!may("TM1", "role:performance_unit", Operation::Complete));
    }

    #[test]
    fn reassigning_is_for_managers_above_and_admins_cancelling_for_admins() {
        assert!(may("SL", "TM1", Operation::Reassign));
        assert!(may("QA", "TM1", Operation::Reassign));
        assert!(!may("TM1", "TM1", Operation::Reassign), "not your own work");
        assert!(!may("PU", "role:performance_unit", Operation::Reassign));
        assert!(may("QA", "TM1", Operation::Cancel));
        assert!(!may("SL", "TM1", Operation::Cancel));
        assert!(!may("TM1", "TM1", Operation::Cancel));
    }

    #[test]
    fn strangers_and_finished_work_are_refused_with_the_reason() {
        let refusal = authorise(
            &org(),
            "qa_admin",
            &work("TM1", Status::Open),
            "NOBODY",
            Operation::View,
        );
        assert_eq!(refusal, Err(Refusal::UnknownPerson("NOBODY".into())));

        let done = work("TM1", Status::Done);
        assert_eq!(
            authorise(&org(), "qa_admin", &done, "TM1", Operation::Complete),
            Err(Refusal::NotOpen {
                id: 7,
                status: Status::Done
            })
        );
        assert!(
            authorise(&org(), "qa_admin", &done, "TM1", Operation::View).is_ok(),
            "finished work can still be opened, to see who finished it"
        );
        let message = authorise(
            &org(),
            "qa_admin",
            &work("TM1", Status::Open),
            "TM2",
            Operation::Reassign,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("TM2 may not reassign assignment 7"),
            "{message}"
        );
    }

    #[test]
    fn nobody_moderates_their_own_audit_not_even_an_admin() {
        let mut moderation = work("SL", Status::Open);
        moderation.activity_id = "audit-moderation".into();
        moderation.slot = "after:3".into();
        moderation.subject = Some("QA".into());
        assert_eq!(
            authorise(&org(), "qa_admin", &moderation, "QA", Operation::Complete),
            Err(Refusal::OwnWork {
                id: 7,
                by: "QA".into()
            })
        );
        assert!(authorise(&org(), "qa_admin", &moderation, "QA", Operation::View).is_ok());
        assert!(authorise(&org(), "qa_admin", &moderation, "SL", Operation::Complete).is_ok());
    }
}
