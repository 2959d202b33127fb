//! Staff import: sync the store's people with HR's file. New people join, changes apply, people
//! missing from the file become leavers and their open work moves up the line.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::Date;

use super::Context;
use crate::org::{Org, Person, StaffRecord};
use crate::store::{Reassignment, StaffChange, StaffSyncReport, Store, StoreError};

/// Works out what changes, from the people the store knows and HR's latest file (pure).
///
/// A person new to qaloop without a start date is active from `today`, except on the very first
/// import, when everyone is taken to have been working already.
pub fn diff_staff(existing: &[Person], incoming: &[StaffRecord], today: Date) -> Vec<StaffChange> {
    let first_import = existing.is_empty();
    let known: HashMap<&str, &Person> = existing
        .iter()
        .map(|p| (p.record.staff_id.as_str(), p))
        .collect();
    let mut changes = Vec::new();
    for record in incoming {
        match known.get(record.staff_id.as_str()) {
            None => changes.push(StaffChange {
                person: Person {
                    record: record.clone(),
                    active_from: record.start_date.or((!first_import).then_some(today)),
                    left_on: None,
                },
                event: "joined",
                detail: String::new(),
            }),
            Some(old) if old.left_on.is_some() => changes.push(StaffChange {
                person: Person {
                    record: record.clone(),
                    active_from: Some(record.start_date.filter(|d| *d > today).unwrap_or(today)),
                    left_on: None,
                },
                event: "rejoined",
                detail: String::new(),
            }),
            Some(old) => {
                let changed = changed_fields(&old.record, record);
                if !changed.is_empty() {
                    changes.push(StaffChange {
                        person: Person {
                            record: record.clone(),
                            active_from: if record.start_date != old.record.start_date {
                                record.start_date.or(old.active_from)
                            } else {
                                old.active_from
                            },
                            left_on: None,
                        },
                        event: "changed",
                        detail: changed.join(", "),
                    });
                }
            }
        }
    }
    let present: std::collections::HashSet<&str> =
        incoming.iter().map(|r| r.staff_id.as_str()).collect();
    for old in existing
        .iter()
        .filter(|p| p.is_current() && !present.contains(p.record.staff_id.as_str()))
    {
        changes.push(StaffChange {
            person: Person {
                record: old.record.clone(),
                active_from: old.active_from,
                left_on: Some(today),
            },
            event: "left",
            detail: String::new(),
        });
    }
    changes
}

fn changed_fields(a: &StaffRecord, b: &StaffRecord) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            fields.push(name);
        }
    };
    check("name", a.name != b.name);
    check("email", a.email != b.email);
    check("roles", a.roles != b.roles);
    check("line_manager_id", a.line_manager_id != b.line_manager_id);
    check("team", a.team != b.team);
    check("service", a.service != b.service);
    check("locality", a.locality != b.locality);
    check("chat_id", a.chat_id != b.chat_id);
    check("start_date", a.start_date != b.start_date);
    fields
}

/// How many times an import starts again after losing a race with another import.
const IMPORT_ATTEMPTS: u32 = 5;

/// Imports a validated staff list: applies the differences and moves leavers' open work to their
/// nearest current manager, in one transaction. Safe to run beside another import: the write is
/// guarded by the staff revision, and a lost race diffs again against what the winner wrote.
pub async fn import_staff(
    store: &Store,
    ctx: &Context,
    incoming: &[StaffRecord],
    actor: &str,
    today: Date,
    now: Timestamp,
) -> Result<StaffSyncReport, StoreError> {
    for _ in 0..IMPORT_ATTEMPTS {
        if let Some(report) = try_import(store, ctx, incoming, actor, today, now).await? {
            return Ok(report);
        }
        tracing::info!("another staff import ran at the same time; comparing again");
    }
    Err(StoreError::Contended("staff import"))
}

/// One attempt of [`import_staff`]; `None` when another import changed the staff meanwhile.
async fn try_import(
    store: &Store,
    ctx: &Context,
    incoming: &[StaffRecord],
    actor: &str,
    today: Date,
    now: Timestamp,
) -> Result<Option<StaffSyncReport>, StoreError> {
    let revision = store.staff_revision().await?;
    let existing = store.people().await?;
    let changes = diff_staff(&existing, incoming, today);
    let mut after: HashMap<String, Person> = existing
        .into_iter()
        .map(|p| (p.record.staff_id.clone(), p))
        .collect();
    for change in &changes {
        after.insert(change.person.record.staff_id.clone(), change.person.clone());
    }
    let org = Org::new(after.into_values());
    let mut reassignments = Vec::new();
    let mut report = StaffSyncReport::default();
    for change in &changes {
        let id = change.person.record.staff_id.clone();
        match change.event {
            "joined" => report.joined.push(id),
            "changed" => report.changed.push(id),
            "rejoined" => report.rejoined.push(id),
            _ => {
                if let Some(manager) = org.nearest_current_manager(&id) {
                    reassignments.push(Reassignment {
                        from: id.clone(),
                        to: manager.record.staff_id.clone(),
                    });
                } else {
                    tracing::warn!(staff_id = %id, "leaver has no current manager; their open work stays with them");
                }
                report.left.push(id);
            }
        }
    }
    // The leavers' open work, so the new holders can be told about it in the same transaction.
    let moving: HashMap<i64, crate::domain::Assignment> = if reassignments.is_empty() {
        HashMap::new()
    } else {
        store
            .assignments(&crate::store::AssignmentFilter {
                statuses: vec![crate::domain::Status::Open],
                assignees: reassignments
                    .iter()
                    .map(|r| crate::domain::Assignee::person(&r.from))
                    .collect(),
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect()
    };
    let notices = |moved: &[(i64, String, String)]| {
        moved
            .iter()
            .filter_map(|(id, _, to)| moving.get(id).map(|a| (a, to)))
            .flat_map(|(a, to)| {
                let mut a = a.clone();
                a.assignee = crate::domain::Assignee::person(to);
                ctx.moved_notices(&org, &a, now)
            })
            .collect()
    };
    match store
        .sync_staff(&revision, &changes, &reassignments, actor, &notices, now)
        .await?
    {
        Some(moved) => {
            report.reassigned = moved;
            Ok(Some(report))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn record(id: &str, manager: Option<&str>) -> StaffRecord {
        StaffRecord {
            staff_id: id.into(),
            name: format!("Person {id}"),
            email: format!("{id}@x.test"),
            roles: ["team_manager".to_owned()].into(),
            line_manager_id: manager.map(Into::into),
            team: String::new(),
            service: String::new(),
            locality: String::new(),
            chat_id: None,
            start_date: None,
        }
    }

    #[test]
    fn first_import_backdates_everyone_later_starters_start_today() {
        let first = diff_staff(&[], &[record("A", None)], date(2027, 5, 10));
        assert_eq!(first[0].person.active_from, None);
        let existing = vec![first[0].person.clone()];
        let second = diff_staff(
            &existing,
            &[record("A", None), record("B", Some("A"))],
            date(2027, 5, 12),
        );
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].event, "joined");
        assert_eq!(second[0].person.active_from, Some(date(2027, 5, 12)));
    }

    #[test]
    fn missing_people_leave_and_changes_name_fields_only() {
        let existing = vec![
            Person {
                record: record("A", None),
                active_from: None,
                left_on: None,
            },
            Person {
                record: record("B", Some("A")),
                active_from: None,
                left_on: None,
            },
        ];
        let mut a = record("A", None);
        a.email = "new@x.test".into();
        let changes = diff_staff(&existing, &[a], date(2027, 6, 1));
        let events: Vec<(&str, &str, &str)> = changes
            .iter()
            .map(|c| {
                (
                    c.person.record.staff_id.as_str(),
                    c.event,
                    c.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(events, vec![("A", "changed", "email"), ("B", "left", "")]);
        assert_eq!(changes[1].person.left_on, Some(date(2027, 6, 1)));
    }
}
