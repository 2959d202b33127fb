//! Actions: what an audit, a moderation or an observation says must change, tracked until the
//! person who raised it (or their manager) confirms it made a difference.
//!
//! The lifecycle is a small state machine, decided here and only here:
//!
//! ```text
//! open ──done (owner, note)──► done ──verify (raiser or their manager, note)──► verified
//!   ▲                            │
//!   └──reopen (raiser or their manager, new due date, reason)──┘
//! ```
//!
//! **Invariant:** pure — [`Action::apply`] checks who may do what and returns the new state; the
//! store writes it with a history row in one transaction.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use crate::org::Org;

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    /// Still to do (new, or reopened).
    Open,
    /// The owner says it is done; waiting for verification.
    Done,
    /// Confirmed to have made a difference. Final.
    Verified,
}

impl ActionState {
    /// The database and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Open => "open",
            ActionState::Done => "done",
            ActionState::Verified => "verified",
        }
    }

    /// Parses the database spelling; `None` for anything qaloop does not write.
    pub fn parse(text: &str) -> Option<ActionState> {
        [ActionState::Open, ActionState::Done, ActionState::Verified]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What raised an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionSource {
    /// A case file, themed or supervision audit.
    Audit,
    /// A service lead's moderation of an audit.
    Moderation,
    /// A direct observation.
    Observation,
    /// Raised by hand (`qaloop actions add`, the page).
    Manual,
}

impl ActionSource {
    /// The database and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionSource::Audit => "audit",
            ActionSource::Moderation => "moderation",
            ActionSource::Observation => "observation",
            ActionSource::Manual => "manual",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<ActionSource> {
        [
            ActionSource::Audit,
            ActionSource::Moderation,
            ActionSource::Observation,
            ActionSource::Manual,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An action as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Database id.
    pub id: i64,
    /// What raised it.
    pub source: ActionSource,
    /// The assignment whose record raised it (none for a manual action).
    pub assignment_id: Option<i64>,
    /// What must change, in a sentence. Never a child's name: the form and the page say so.
    pub description: String,
    /// Staff id of who must do it.
    pub owner: String,
    /// Staff id of who raised it; they (or their manager) verify it.
    pub raised_by: String,
    /// When it must be done by.
    pub due: Date,
    /// Raised from an audit graded Inadequate: shorter timelines, escalates a level sooner.
    pub inadequate: bool,
    /// Where it stands.
    pub state: ActionState,
    /// How many times it has been reopened.
    pub reopened: u32,
    /// When it was raised.
    pub created_at: Timestamp,
    /// When the owner said it was done (the latest time).
    pub done_at: Option<Timestamp>,
    /// When it was verified.
    pub verified_at: Option<Timestamp>,
    /// Who verified it.
    pub verified_by: Option<String>,
}

/// A change someone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionChange {
    /// The owner says it is done, with what was done.
    Done {
        /// What was done.
        note: String,
    },
    /// It made a difference, with how the verifier knows.
    Verify {
        /// How they know.
        note: String,
    },
    /// It did not: back to open with a new due date and the reason.
    Reopen {
        /// The new due date (not in the past).
        due: Date,
        /// Why.
        reason: String,
    },
}

impl ActionChange {
    /// The history event name.
    pub fn event(&self) -> &'static str {
        match self {
            ActionChange::Done { .. } => "done",
            ActionChange::Verify { .. } => "verified",
            ActionChange::Reopen { .. } => "reopened",
        }
    }

    /// The note or reason recorded with the change.
    pub fn note(&self) -> &str {
        match self {
            ActionChange::Done { note } | ActionChange::Verify { note } => note,
            ActionChange::Reopen { reason, .. } => reason,
        }
    }

    /// The state the change leads to.
    pub fn to_state(&self) -> ActionState {
        match self {
            ActionChange::Done { .. } => ActionState::Done,
            ActionChange::Verify { .. } => ActionState::Verified,
            ActionChange::Reopen { .. } => ActionState::Open,
        }
    }
}

/// Why an action could not be raised or changed. Each names what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// Someone named is not current staff.
    #[error("`{0}` is not a current member of staff")]
    UnknownPerson(String),
    /// A required text is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The due date has passed.
    #[error("the due date {due} is in the past (today is {today}); give today or a later date")]
    DueInPast {
        /// What was given.
        due: Date,
        /// Today, locally.
        today: Date,
    },
    /// The change does not fit the current state.
    #[error("action {id} is {}: it cannot be {}", state.as_str(), change)]
    WrongState {
        /// The action.
        id: i64,
        /// Where it stands.
        state: ActionState,
        /// What was asked (`done`, `verified`, `reopened`).
        change: &'static str,
    },
    /// They may not.
    #[error("{by} may not mark action {id} {change}: {who_may}")]
    NotAllowed {
        /// The action.
        id: i64,
        /// Who tried.
        by: String,
        /// What was asked.
        change: &'static str,
        /// Who may, in words.
        who_may: &'static str,
    },
}

/// What someone asks to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAction {
    /// What raised it.
    pub source: ActionSource,
    /// The assignment whose record raised it.
    pub assignment_id: Option<i64>,
    /// What must change.
    pub description: String,
    /// Who must do it.
    pub owner: String,
    /// Who raises it.
    pub raised_by: String,
    /// By when.
    pub due: Date,
    /// Raised from an Inadequate audit.
    pub inadequate: bool,
}

impl NewAction {
    /// Checks an action before it is raised: a description, a current owner and raiser, and a
    /// due date not in the past. The first problem of [`NewAction::problems`].
    pub fn validate(&self, org: &Org, today: Date) -> Result<(), ActionError> {
        self.problems(org, today)
            .into_iter()
            .next()
            .map_or(Ok(()), Err)
    }

    /// Every problem with this action, in form order (description, owner, due date), so a
    /// page can name each field at once; empty when it may be raised.
    pub fn problems(&self, org: &Org, today: Date) -> Vec<ActionError> {
        let mut problems = Vec::new();
        if self.description.trim().is_empty() {
            problems.push(ActionError::Missing("a description"));
        }
        if self.owner.trim().is_empty() {
            problems.push(ActionError::Missing("an owner"));
        }
        let unknown = |id: &str| org.get(id).is_none_or(|p| !p.is_current());
        // An empty owner is already reported as missing.
        if !self.owner.trim().is_empty() && unknown(&self.owner) {
            problems.push(ActionError::UnknownPerson(self.owner.clone()));
        }
        if unknown(&self.raised_by) {
            problems.push(ActionError::UnknownPerson(self.raised_by.clone()));
        }
        if self.due < today {
            problems.push(ActionError::DueInPast {
                due: self.due,
                today,
            });
        }
        problems
    }
}

/// Whether `by` may raise an action by hand from `audit`'s record: the audit must be complete,
/// and `by` the person who completed it or someone above them in line management.
pub fn may_raise_from(org: &Org, audit: &super::Assignment, by: &str) -> bool {
    audit.status == super::Status::Done
        && audit
            .completed_by
            .as_deref()
            .is_some_and(|auditor| by == auditor || org.is_above(by, auditor))
}

impl Action {
    /// Open (or reopened) and past its due date on `today`.
    pub fn is_overdue(&self, today: Date) -> bool {
        self.state == ActionState::Open && self.due < today
    }

    /// Whether `by` may open this action's page: its owner, who raised it, or anyone above
    /// either in line management (what they may then do is [`Action::apply`]'s to say).
    pub fn may_see(&self, org: &Org, by: &str) -> bool {
        [&self.owner, &self.raised_by]
            .into_iter()
            .any(|id| by == id || org.is_above(by, id))
    }

    /// Whether `by` may verify or reopen this action: the person who raised it, or anyone
    /// above them in line management — but never the owner, who cannot vouch for their own
    /// work (so an action a manager raised for themself is verified by their manager).
    pub fn may_verify(&self, org: &Org, by: &str) -> bool {
        by != self.owner && (by == self.raised_by || org.is_above(by, &self.raised_by))
    }

    /// Checks that `by` may make `change` now (`today` local), returning the new state.
    ///
    /// - **done**: the owner, or anyone above the owner in line management, on open work;
    /// - **verify** / **reopen**: see [`Action::may_verify`], on done work; a reopen needs a
    ///   due date not in the past.
    pub fn apply(
        &self,
        org: &Org,
        by: &str,
        change: &ActionChange,
        today: Date,
    ) -> Result<ActionState, ActionError> {
        if org.get(by).is_none_or(|p| !p.is_current()) {
            return Err(ActionError::UnknownPerson(by.to_owned()));
        }
        let wrong_state = || ActionError::WrongState {
            id: self.id,
            state: self.state,
            change: change.event(),
        };
        let not_allowed = |who_may| ActionError::NotAllowed {
            id: self.id,
            by: by.to_owned(),
            change: change.event(),
            who_may,
        };
        if change.note().trim().is_empty() {
            return Err(ActionError::Missing(match change {
                ActionChange::Done { .. } => "a note of what was done",
                ActionChange::Verify { .. } => "a note of how you know it made a difference",
                ActionChange::Reopen { .. } => "the reason for reopening",
            }));
        }
        match change {
            ActionChange::Done { .. } => {
                if self.state != ActionState::Open {
                    return Err(wrong_state());
                }
                if by != self.owner && !org.is_above(by, &self.owner) {
                    return Err(not_allowed(
                        "only its owner or someone above them in line management may",
                    ));
                }
            }
            ActionChange::Verify { .. } | ActionChange::Reopen { .. } => {
                if self.state != ActionState::Done {
                    return Err(wrong_state());
                }
                if !self.may_verify(org, by) {
                    return Err(not_allowed(
                        "only the person who raised it, or their manager, may (never its owner)",
                    ));
                }
                if let ActionChange::Reopen { due, .. } = change
                    && *due < today
                {
                    return Err(ActionError::DueInPast { due: *due, today });
                }
            }
        }
        Ok(change.to_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::org::StaffRecord;
    use jiff::civil::date;

    fn record(id: &str, manager: Option<&str>) -> StaffRecord {
        StaffRecord {
            staff_id: id.into(),
            name: format!("Person {id}"),
            email: format!("{id}@x.test"),
            roles: ["team_manager".to_owned()].into_iter().collect(),
            line_manager_id: manager.map(Into::into),
            team: String::new(),
            service: String::new(),
            locality: String::new(),
            chat_id: None,
            start_date: None,
        }
    }

    /// SL → TM1 → P1; TM2 is TM1's peer.
    fn org() -> Org {
        Org::from_records([
            record("SL", None),
            record("TM1", Some("SL")),
            record("TM2", Some("SL")),
            record("P1", Some("TM1")),
        ])
    }

    fn action(owner: &str, raised_by: &str, state: ActionState) -> Action {
        Action {
            id: 3,
            source: ActionSource::Audit,
            assignment_id: Some(9),
            description: "Update the chronology".into(),
            owner: owner.into(),
            raised_by: raised_by.into(),
            due: date(2027, 6, 30),
            inadequate: false,
            state,
            reopened: 0,
            created_at: Timestamp::UNIX_EPOCH,
            done_at: None,
            verified_at: None,
            verified_by: None,
        }
    }

    const TODAY: Date = date(2027, 6, 10);

    fn done() -> ActionChange {
        ActionChange::Done {
            note: "Chronology updated".into(),
        }
    }

    fn verify() -> ActionChange {
        ActionChange::Verify {
            note: "Checked on file".into(),
        }
    }

    #[test]
    fn the_owner_says_done_and_the_raiser_verifies() {
        let a = action("P1", "TM1", ActionState::Open);
        assert_eq!(a.apply(&org(), "P1", &done(), TODAY), Ok(ActionState::Done));
        assert!(matches!(
            a.apply(&org(), "TM2", &done(), TODAY),
            Err(ActionError::NotAllowed { .. })
        ));
        let d = action("P1", "TM1", ActionState::Done);
        assert_eq!(
            d.apply(&org(), "TM1", &verify(), TODAY),
            Ok(ActionState::Verified)
        );
        assert_eq!(
            d.apply(&org(), "SL", &verify(), TODAY),
            Ok(ActionState::Verified),
            "the raiser's manager may verify too"
        );
        assert!(matches!(
            d.apply(&org(), "P1", &verify(), TODAY),
            Err(ActionError::NotAllowed { .. })
        ));
    }

    #[test]
    fn nobody_verifies_their_own_action() {
        // A manager who raised an action for themself cannot verify it; their manager can.
        let own = action("TM1", "TM1", ActionState::Done);
        assert!(matches!(
            own.apply(&org(), "TM1", &verify(), TODAY),
            Err(ActionError::NotAllowed { .. })
        ));
        assert_eq!(
            own.apply(&org(), "SL", &verify(), TODAY),
            Ok(ActionState::Verified)
        );
    }

    #[test]
    fn reopening_needs_a_reason_and_a_date_not_in_the_past() {
        let d = action("P1", "TM1", ActionState::Done);
        let past = ActionChange::Reopen {
            due: date(2027, 6, 1),
            reason: "Not embedded".into(),
        };
        assert!(matches!(
            d.apply(&org(), "TM1", &past, TODAY),
            Err(ActionError::DueInPast { .. })
        ));
        let blank = ActionChange::Reopen {
            due: date(2027, 7, 1),
            reason: " ".into(),
        };
        assert!(matches!(
            d.apply(&org(), "TM1", &blank, TODAY),
            Err(ActionError::Missing(_))
        ));
        let ok = ActionChange::Reopen {
            due: date(2027, 7, 1),
            reason: "Not embedded".into(),
        };
        assert_eq!(d.apply(&org(), "TM1", &ok, TODAY), Ok(ActionState::Open));
    }

    #[test]
    fn changes_must_fit_the_state() {
        let open = action("P1", "TM1", ActionState::Open);
        assert!(matches!(
            open.apply(&org(), "TM1", &verify(), TODAY),
            Err(ActionError::WrongState { .. })
        ));
        let verified = action("P1", "TM1", ActionState::Verified);
        assert!(matches!(
            verified.apply(&org(), "P1", &done(), TODAY),
            Err(ActionError::WrongState { .. })
        ));
    }

    #[test]
    fn a_new_action_needs_an_owner_a_description_and_a_future_date() {
        let new = |owner: &str, description: &str, due: Date| NewAction {
            source: ActionSource::Manual,
            assignment_id: None,
            description: description.into(),
            owner: owner.into(),
            raised_by: "TM1".into(),
            due,
            inadequate: false,
        };
        let org = org();
        assert_eq!(new("P1", "Do it", TODAY).validate(&org, TODAY), Ok(()));
        assert_eq!(
            new("", "Do it", TODAY).validate(&org, TODAY),
            Err(ActionError::Missing("an owner"))
        );
        assert_eq!(
            new("GHOST", "Do it", TODAY).validate(&org, TODAY),
            Err(ActionError::UnknownPerson("GHOST".into()))
        );
        assert!(matches!(
            new("P1", "Do it", date(2027, 6, 9)).validate(&org, TODAY),
            Err(ActionError::DueInPast { .. })
        ));
        assert_eq!(
            new("P1", "  ", TODAY).validate(&org, TODAY),
            Err(ActionError::Missing("a description"))
        );
        // A page names every problem at once, in form order.
        assert_eq!(
            new("GHOST", " ", date(2027, 6, 9)).problems(&org, TODAY),
            [
                ActionError::Missing("a description"),
                ActionError::UnknownPerson("GHOST".into()),
                ActionError::DueInPast {
                    due: date(2027, 6, 9),
                    today: TODAY
                },
            ]
        );
    }
}
