//! Who holds a piece of work: one person, or a role any of whose holders may do it.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::org::{Org, Person};

/// The holder of a piece of work.
///
/// Stored and shown as text: a staff id for a person, `role:NAME` for a role. That spelling is
/// parsed once, here ([`Assignee::parse`]), and written once ([`fmt::Display`]); code elsewhere
/// matches on the enum instead of looking for the prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Assignee {
    /// A member of staff, by staff id.
    Person(String),
    /// Everyone who holds this role (from the schedule's `roles`).
    Role(String),
}

/// The text prefix that marks role-owned work in the database, JSON and outbox keys.
const ROLE_PREFIX: &str = "role:";

impl Assignee {
    /// Parses the stored spelling. Never fails: anything without the role prefix is a staff id
    /// (staff ids may not start with `role:`; the staff file's validation refuses them).
    pub fn parse(text: &str) -> Assignee {
        match text.strip_prefix(ROLE_PREFIX) {
            Some(role) => Assignee::Role(role.to_owned()),
            None => Assignee::Person(text.to_owned()),
        }
    }

    /// Work owned by `role`.
    pub fn role(role: impl Into<String>) -> Assignee {
        Assignee::Role(role.into())
    }

    /// Work held by the person `staff_id`.
    pub fn person(staff_id: impl Into<String>) -> Assignee {
        Assignee::Person(staff_id.into())
    }

    /// The staff id, when a person holds it.
    pub fn staff_id(&self) -> Option<&str> {
        match self {
            Assignee::Person(id) => Some(id),
            Assignee::Role(_) => None,
        }
    }

    /// Whether `staff_id` is this person.
    pub fn is_person(&self, staff_id: &str) -> bool {
        self.staff_id() == Some(staff_id)
    }

    /// The current people who would do this work: the person if still current, else every
    /// current holder of the role.
    pub fn current_holders<'o>(&self, org: &'o Org) -> Vec<&'o Person> {
        match self {
            Assignee::Person(id) => org.get(id).filter(|p| p.is_current()).into_iter().collect(),
            Assignee::Role(role) => org.current_holders(role),
        }
    }

    /// Whether `person` holds this work directly: it is theirs, or owned by a role they hold.
    pub fn is_held_by(&self, person: &Person) -> bool {
        match self {
            Assignee::Person(id) => *id == person.record.staff_id,
            Assignee::Role(role) => person.holds(role),
        }
    }
}

impl fmt::Display for Assignee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Assignee::Person(id) => f.write_str(id),
            Assignee::Role(role) => write!(f, "{ROLE_PREFIX}{role}"),
        }
    }
}

/// Compares with the stored spelling (`"S0001"`, `"role:slt"`), for tests and filters.
impl PartialEq<str> for Assignee {
    fn eq(&self, other: &str) -> bool {
        match self {
            Assignee::Person(id) => id == other,
            Assignee::Role(role) => other.strip_prefix(ROLE_PREFIX).is_some_and(|r| r == role),
        }
    }
}

impl PartialEq<&str> for Assignee {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl Serialize for Assignee {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_spelling_round_trips() {
        for text in ["S0001", "role:performance_unit"] {
            assert_eq!(Assignee::parse(text).to_string(), text);
        }
        assert_eq!(
            Assignee::parse("role:slt"),
            Assignee::Role("slt".to_owned())
        );
        assert_eq!(
            Assignee::parse("S0009").staff_id(),
            Some("S0009"),
            "a plain id is a person"
        );
    }

    #[test]
    fn serialises_as_its_stored_spelling() {
        let json = serde_json::to_string(&Assignee::role("slt")).unwrap();
        assert_eq!(json, "\"role:slt\"");
    }
}
