//! Parsing and validating HR's staff CSV. Every bad row is reported at once, with its row number
//! and column, so HR can fix the export in one go; any problem means nothing is imported.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use jiff::civil::Date;
use serde::Deserialize;

use super::StaffRecord;
use crate::problem::{Problem, Problems};
use crate::schedule::Schedule;

/// The header HR's export must have, in this order.
pub const HEADER: [&str; 10] = [
    "staff_id",
    "name",
    "email",
    "roles",
    "line_manager_id",
    "team",
    "service",
    "locality",
    "chat_id",
    "start_date",
];

#[derive(Deserialize)]
struct Row {
    staff_id: String,
    name: String,
    email: String,
    roles: String,
    line_manager_id: String,
    team: String,
    service: String,
    locality: String,
    #[serde(default)]
    chat_id: String,
    #[serde(default)]
    start_date: String,
}

/// Parses and validates the staff file's text against the schedule's roles.
///
/// Rows are numbered as a spreadsheet shows them: the header is row 1.
pub fn parse_staff(
    text: &str,
    file: &Path,
    schedule: &Schedule,
) -> Result<Vec<StaffRecord>, Problems> {
    let mut problems = Problems::default();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    match reader.headers() {
        Ok(headers) => {
            let got: Vec<&str> = headers.iter().collect();
            let missing: Vec<&str> = HEADER
                .iter()
                .copied()
                .filter(|h| !got.contains(h) && !matches!(*h, "chat_id" | "start_date"))
                .collect();
            let unknown: Vec<&str> = got
                .iter()
                .copied()
                .filter(|h| !HEADER.contains(h))
                .collect();
            if !missing.is_empty() || !unknown.is_empty() {
                return Err(Problem::new(
                    file,
                    "row 1",
                    format!(
                        "header must be `{}`; missing: [{}], unknown: [{}]",
                        HEADER.join(","),
                        missing.join(", "),
                        unknown.join(", ")
                    ),
                )
                .into());
            }
        }
        Err(e) => {
            return Err(Problem::new(file, "row 1", format!("unreadable header: {e}")).into());
        }
    }

    let mut records: Vec<(usize, StaffRecord)> = Vec::new();
    for (index, row) in reader.deserialize::<Row>().enumerate() {
        let row_no = index + 2;
        let at = |column: &str| format!("row {row_no}, column {column}");
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                problems.push(Problem::new(file, format!("row {row_no}"), e.to_string()));
                continue;
            }
        };
        if row.staff_id.is_empty() {
            problems.push(Problem::new(file, at("staff_id"), "empty"));
        } else if !row
            .staff_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || row.staff_id.starts_with("role:")
        {
            problems.push(Problem::new(
                file,
                at("staff_id"),
                format!(
                    "`{}` must be letters, digits, `-`, `_` or `.`",
                    row.staff_id
                ),
            ));
        }
        if row.name.is_empty() {
            problems.push(Problem::new(file, at("name"), "empty"));
        }
        if !valid_email(&row.email) {
            problems.push(Problem::new(
                file,
                at("email"),
                format!("`{}` is not an email address", row.email),
            ));
        }
        let mut roles = BTreeSet::new();
        for role in row
            .roles
            .split(';')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            if schedule.roles.contains(role) {
                roles.insert(role.to_owned());
            } else {
                problems.push(Problem::new(
                    file,
                    at("roles"),
                    format!("unknown role `{role}` (known: {})", join(&schedule.roles)),
                ));
            }
        }
        let start_date = if row.start_date.is_empty() {
            None
        } else {
            match row.start_date.parse::<Date>() {
                Ok(d) => Some(d),
                Err(_) => {
                    problems.push(Problem::new(
                        file,
                        at("start_date"),
                        format!("`{}` is not a date (YYYY-MM-DD)", row.start_date),
                    ));
                    None
                }
            }
        };
        records.push((
            row_no,
            StaffRecord {
                staff_id: row.staff_id,
                name: row.name,
                email: row.email,
                roles,
                line_manager_id: non_empty(row.line_manager_id),
                team: row.team,
                service: row.service,
                locality: row.locality,
                chat_id: non_empty(row.chat_id),
                start_date,
            },
        ));
    }

    let mut first_row: HashMap<&str, usize> = HashMap::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    for (row_no, r) in &records {
        if let Some(first) = first_row.insert(&r.staff_id, *row_no) {
            problems.push(Problem::new(
                file,
                format!("row {row_no}, column staff_id"),
                format!("duplicate id `{}` (first on row {first})", r.staff_id),
            ));
            first_row.insert(&r.staff_id, first);
        }
        if let Some(first) = emails.insert(r.email.to_lowercase(), *row_no) {
            problems.push(Problem::new(
                file,
                format!("row {row_no}, column email"),
                format!("duplicate email (first on row {first})"),
            ));
        }
    }
    for (row_no, r) in &records {
        let at = format!("row {row_no}, column line_manager_id");
        match &r.line_manager_id {
            Some(m) if m == &r.staff_id => problems.push(Problem::new(
                file,
                at,
                "a person cannot be their own line manager",
            )),
            Some(m) if !first_row.contains_key(m.as_str()) => problems.push(Problem::new(
                file,
                at,
                format!("unknown line manager `{m}`: no row has that staff_id"),
            )),
            Some(_) => {}
            None => {
                let needs: Vec<&str> = r
                    .roles
                    .iter()
                    .filter(|role| schedule.require_line_manager.contains(*role))
                    .map(String::as_str)
                    .collect();
                if !needs.is_empty() {
                    problems.push(Problem::new(
                        file,
                        at,
                        format!(
                            "empty, but a {} must have a line manager",
                            needs.join(" and ")
                        ),
                    ));
                }
            }
        }
    }
    // Cycles: follow each chain; a chain that revisits a person loops.
    let manager: HashMap<&str, &str> = records
        .iter()
        .filter_map(|(_, r)| {
            r.line_manager_id
                .as_deref()
                .map(|m| (r.staff_id.as_str(), m))
        })
        .collect();
    let mut reported: HashSet<&str> = HashSet::new();
    for (row_no, r) in &records {
        let mut seen = vec![r.staff_id.as_str()];
        let mut current = r.staff_id.as_str();
        while let Some(&next) = manager.get(current) {
            if next == r.staff_id {
                if seen.iter().all(|s| !reported.contains(s)) {
                    reported.extend(seen.iter().copied());
                    seen.push(next);
                    problems.push(Problem::new(
                        file,
                        format!("row {row_no}, column line_manager_id"),
                        format!("line-management cycle: {}", seen.join(" → ")),
                    ));
                }
                break;
            }
            if seen.contains(&next) {
                break;
            }
            seen.push(next);
            current = next;
        }
    }
    problems.into_result(records.into_iter().map(|(_, r)| r).collect())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn join(roles: &BTreeSet<String>) -> String {
    roles
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted domain, no spaces.
/// Deliverability is the mail server's business; this catches typos and swapped columns.
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == ';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/schedule.toml"))
                .unwrap();
        Schedule::parse(&text, Path::new("schedule.toml")).unwrap()
    }

    #[test]
    fn the_example_staff_file_is_valid() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/example-staff.csv"
        ))
        .unwrap();
        let staff = parse_staff(&text, Path::new("example-staff.csv"), &schedule()).unwrap();
        let tms = staff
            .iter()
            .filter(|s| s.roles.contains("team_manager"))
            .count();
        assert!((30..=40).contains(&tms), "{tms} team managers");
    }

    #[test]
    fn every_bad_row_is_reported_with_row_and_column() {
        let text = "staff_id,name,email,roles,line_manager_id,team,service,locality,chat_id,start_date\n\
            A,Ann,ann@x.test,slt,,,,,,\n\
            B,Bob,bob-at-x,team_manager,,,,,,\n\
            C,Cat,cat@x.test,team_manger,A,,,,,\n\
            A,Dup,dup@x.test,slt,A,,,,,\n\
            D,Dan,dan@x.test,service_lead,Z,,,,,2025-13-01\n\
            E,Eve,eve@x.test,slt,F,,,,,\n\
            F,Fay,fay@x.test,slt,E,,,,,\n";
        let problems = parse_staff(text, Path::new("staff.csv"), &schedule()).unwrap_err();
        let all = problems.to_string();
        for expected in [
            "row 3, column email: `bob-at-x` is not an email address",
            "row 3, column line_manager_id: empty, but a team_manager must have a line manager",
            "row 4, column roles: unknown role `team_manger`",
            "row 5, column staff_id: duplicate id `A` (first on row 2)",
            "row 6, column line_manager_id: unknown line manager `Z`",
            "row 6, column start_date",
            "line-management cycle: E → F → E",
        ] {
            assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
        }
    }

    #[test]
    fn a_wrong_header_is_named() {
        let problems = parse_staff("id,name\n1,x\n", Path::new("s.csv"), &schedule()).unwrap_err();
        assert!(problems.to_string().contains("row 1"));
        assert!(problems.to_string().contains("missing: [staff_id"));
    }
}
