//! The organisation: staff, their roles, and who manages whom.
//!
//! **Invariant:** pure. The staff file's text is parsed in [`csv`]; the store persists people and
//! hands back [`Person`] values; nothing here reads files, the database or the clock.

pub mod csv;

use std::collections::{BTreeSet, HashMap};

use jiff::civil::Date;
use serde::Serialize;

/// One row of HR's staff file, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaffRecord {
    /// HR's id; the only personal identifier qaloop logs.
    pub staff_id: String,
    /// Display name, for notifications; never logged.
    pub name: String,
    /// Where email notifications go.
    pub email: String,
    /// Roles held, from the schedule's `roles`.
    pub roles: BTreeSet<String>,
    /// Whom escalations go to; `None` only at the top of the organisation.
    pub line_manager_id: Option<String>,
    /// Team name, for grouping digests.
    pub team: String,
    /// Service name, for grouping digests.
    pub service: String,
    /// Locality, for grouping reports.
    pub locality: String,
    /// Chat address for direct messages, when the person has one.
    pub chat_id: Option<String>,
    /// First day at work; `None` when HR did not say.
    pub start_date: Option<Date>,
}

/// A person as the store knows them: their record plus when they are active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// The latest record from HR.
    pub record: StaffRecord,
    /// First day they can be given work; `None` means "since before qaloop knew them".
    pub active_from: Option<Date>,
    /// The day qaloop saw them leave (absent from the staff file); `None` while they stay.
    pub left_on: Option<Date>,
}

impl Person {
    /// Whether they were active at the start of `day`: started on or before it, not yet left.
    pub fn active_on(&self, day: Date) -> bool {
        self.active_from.is_none_or(|from| from <= day)
            && self.left_on.is_none_or(|left| left > day)
    }

    /// Whether they are still with the organisation (not a leaver).
    pub fn is_current(&self) -> bool {
        self.left_on.is_none()
    }

    /// Whether they hold `role`.
    pub fn holds(&self, role: &str) -> bool {
        self.record.roles.contains(role)
    }
}

/// Everyone qaloop knows, current and past, indexed by staff id.
#[derive(Debug, Clone, Default)]
pub struct Org {
    people: HashMap<String, Person>,
}

impl Org {
    /// An organisation of `people`.
    pub fn new(people: impl IntoIterator<Item = Person>) -> Self {
        Self {
            people: people
                .into_iter()
                .map(|p| (p.record.staff_id.clone(), p))
                .collect(),
        }
    }

    /// The organisation a staff file describes, before any import: everyone current, active
    /// from their start date (for `plan` and `check`, which write nothing).
    pub fn from_records(records: impl IntoIterator<Item = StaffRecord>) -> Self {
        Self::new(records.into_iter().map(|record| Person {
            active_from: record.start_date,
            record,
            left_on: None,
        }))
    }

    /// The person with `id`, current or past.
    pub fn get(&self, id: &str) -> Option<&Person> {
        self.people.get(id)
    }

    /// Everyone, in no particular order.
    pub fn people(&self) -> impl Iterator<Item = &Person> {
        self.people.values()
    }

    /// Holders of `role` who were active at the start of `day`, sorted by id so plans are stable.
    pub fn holders_active_on(&self, role: &str, day: Date) -> Vec<&Person> {
        let mut holders: Vec<&Person> = self
            .people
            .values()
            .filter(|p| p.holds(role) && p.active_on(day))
            .collect();
        holders.sort_by(|a, b| a.record.staff_id.cmp(&b.record.staff_id));
        holders
    }

    /// Current holders of `role`, sorted by id.
    pub fn current_holders(&self, role: &str) -> Vec<&Person> {
        let mut holders: Vec<&Person> = self
            .people
            .values()
            .filter(|p| p.holds(role) && p.is_current())
            .collect();
        holders.sort_by(|a, b| a.record.staff_id.cmp(&b.record.staff_id));
        holders
    }

    /// The line managers above `id`, nearest first. Stops at the top or at a loop (the staff
    /// import rejects loops, but old data must not hang us).
    pub fn managers_of(&self, id: &str) -> Vec<&Person> {
        let mut chain = Vec::new();
        let mut current = self.people.get(id);
        while let Some(person) = current {
            let Some(next) = person
                .record
                .line_manager_id
                .as_deref()
                .and_then(|m| self.people.get(m))
            else {
                break;
            };
            if next.record.staff_id == id
                || chain
                    .iter()
                    .any(|p: &&Person| p.record.staff_id == next.record.staff_id)
            {
                break;
            }
            chain.push(next);
            current = Some(next);
        }
        chain
    }

    /// The nearest current manager above `id`: where a leaver's work goes.
    pub fn nearest_current_manager(&self, id: &str) -> Option<&Person> {
        self.managers_of(id).into_iter().find(|p| p.is_current())
    }

    /// Whether `manager` is somewhere above `id` in line management.
    pub fn is_above(&self, manager: &str, id: &str) -> bool {
        self.managers_of(id)
            .iter()
            .any(|p| p.record.staff_id == manager)
    }

    /// Number of current holders of each role, for `qaloop check`.
    pub fn role_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for p in self.people.values().filter(|p| p.is_current()) {
            for role in &p.record.roles {
                *counts.entry(role.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}
