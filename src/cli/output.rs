//! Output formats for listings: an aligned table for people, JSON and CSV for programs.

use jiff::civil::Date;
use serde::Serialize;

use crate::domain::{Assignment, NewAssignment};

/// How a listing is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// A JSON array of objects.
    Json,
    /// CSV with a header row.
    Csv,
}

/// An assignment as `assignments list` shows it; the JSON field names are a public interface.
#[derive(Debug, Serialize)]
pub struct AssignmentView {
    /// Database id.
    pub id: i64,
    /// Activity id.
    pub activity: String,
    /// Period label.
    pub period: String,
    /// First day of the period (YYYY-MM-DD).
    pub period_start: String,
    /// Last day of the period.
    pub period_end: String,
    /// Staff id, or `role:NAME`.
    pub assignee: String,
    /// Staff id the work is about, or null.
    pub subject: Option<String>,
    /// Due date.
    pub due: String,
    /// open, done or cancelled.
    pub status: String,
    /// Open and past its due date at the judged moment.
    pub overdue: bool,
    /// Created after its period began because qaloop was down.
    pub created_late: bool,
    /// Already past its due date when qaloop went live: listed, never chased.
    pub before_go_live: bool,
    /// RFC 3339 instant, or null.
    pub completed_at: Option<String>,
    /// Staff id, or null.
    pub completed_by: Option<String>,
}

impl AssignmentView {
    /// The view of `a`, judging overdue on local date `today`.
    pub fn new(a: &Assignment, today: Date) -> Self {
        Self {
            id: a.id,
            activity: a.activity_id.clone(),
            period: a.period_label.clone(),
            period_start: a.period_start.to_string(),
            period_end: a.period_end.to_string(),
            assignee: a.assignee.to_string(),
            subject: a.subject.clone(),
            due: a.due.to_string(),
            status: a.status.as_str().to_owned(),
            overdue: a.is_overdue(today),
            created_late: a.created_late,
            before_go_live: a.before_go_live,
            completed_at: a.completed_at.map(|t| t.to_string()),
            completed_by: a.completed_by.clone(),
        }
    }
}

/// A planned assignment as `qaloop plan` shows it.
#[derive(Debug, Serialize)]
pub struct PlanView {
    /// Activity id.
    pub activity: String,
    /// Period label.
    pub period: String,
    /// First day of the period.
    pub period_start: String,
    /// Last day of the period.
    pub period_end: String,
    /// Staff id, or `role:NAME`.
    pub assignee: String,
    /// Due date.
    pub due: String,
}

impl From<&NewAssignment> for PlanView {
    fn from(a: &NewAssignment) -> Self {
        Self {
            activity: a.activity_id.clone(),
            period: a.period_label.clone(),
            period_start: a.period_start.to_string(),
            period_end: a.period_end.to_string(),
            assignee: a.assignee.to_string(),
            due: a.due.to_string(),
        }
    }
}

/// An action as `actions list` shows it; the JSON field names are a public interface.
#[derive(Debug, Serialize)]
pub struct ActionView {
    /// Database id.
    pub id: i64,
    /// audit, moderation, observation or manual.
    pub source: String,
    /// The assignment whose record raised it, or null.
    pub assignment_id: Option<i64>,
    /// What must change.
    pub description: String,
    /// Owner's staff id.
    pub owner: String,
    /// The owner's service (from the staff file).
    pub service: String,
    /// The owner's team.
    pub team: String,
    /// Who raised it (staff id).
    pub raised_by: String,
    /// Due date.
    pub due: String,
    /// open, done or verified.
    pub state: String,
    /// Open and past its due date at the judged moment.
    pub overdue: bool,
    /// Times reopened.
    pub reopened: u32,
    /// Raised from an audit graded Inadequate.
    pub inadequate: bool,
    /// Whole days since it was raised.
    pub age_days: i64,
}

impl ActionView {
    /// The view of `a` on local date `today`, with the owner's service and team from `org`.
    pub fn new(
        a: &crate::domain::Action,
        org: &crate::org::Org,
        today: Date,
        tz: &jiff::tz::TimeZone,
    ) -> Self {
        let owner = org.get(&a.owner);
        let raised = a.created_at.to_zoned(tz.clone()).date();
        Self {
            id: a.id,
            source: a.source.as_str().to_owned(),
            assignment_id: a.assignment_id,
            description: a.description.clone(),
            owner: a.owner.clone(),
            service: owner.map(|p| p.record.service.clone()).unwrap_or_default(),
            team: owner.map(|p| p.record.team.clone()).unwrap_or_default(),
            raised_by: a.raised_by.clone(),
            due: a.due.to_string(),
            state: a.state.as_str().to_owned(),
            overdue: a.is_overdue(today),
            reopened: a.reopened,
            inadequate: a.inadequate,
            age_days: (today - raised).get_days().into(),
        }
    }
}

/// Writes one line of command output to stdout (what the `out!` macro calls). A closed pipe
/// becomes [`Failure::closed_pipe`](super::Failure) so the command stops quietly.
pub fn line(args: std::fmt::Arguments<'_>) -> Result<(), super::Failure> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{args}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(super::Failure::closed_pipe()),
        Err(e) => Err(super::Failure::new(
            super::exit::FAILURE,
            format!("writing to standard output: {e}"),
        )),
    }
}

/// Prints `rows` in `format`; `columns` picks and orders the table columns from each row's JSON.
/// A reader that stops early (`| head`) is not an error.
pub fn print<T: Serialize>(rows: &[T], format: Format, columns: &[&str]) -> anyhow::Result<()> {
    match write(rows, format, columns) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let io = e.downcast_ref::<std::io::Error>().or_else(|| {
        e.downcast_ref::<csv::Error>().and_then(|c| match c.kind() {
            csv::ErrorKind::Io(io) => Some(io),
            _ => None,
        })
    });
    io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn write<T: Serialize>(rows: &[T], format: Format, columns: &[&str]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?,
        Format::Csv => {
            // Serialise each row once to learn its cells, then write them neutralised.
            let mut buffer = csv::Writer::from_writer(Vec::new());
            for row in rows {
                buffer.serialize(row)?;
            }
            let bytes = buffer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes.as_slice());
            let mut w = csv::Writer::from_writer(&mut out);
            for record in reader.records() {
                w.write_record(
                    record?
                        .iter()
                        .map(|cell| spreadsheet_safe(cell).into_owned()),
                )?;
            }
            w.flush()?;
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    let value = serde_json::to_value(row).unwrap_or_default();
                    columns
                        .iter()
                        .map(|c| match &value[*c] {
                            serde_json::Value::Null => "-".to_owned(),
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    cells
                        .iter()
                        .map(|r| r[i].len())
                        .max()
                        .unwrap_or(0)
                        .max(c.len())
                })
                .collect();
            let line = |values: Vec<&str>| {
                values
                    .iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            writeln!(out, "{}", line(columns.to_vec()))?;
            for row in &cells {
                writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
            }
        }
    }
    Ok(())
}

/// A CSV cell a spreadsheet will show as text, never run as a formula: a cell starting with
/// `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'` (OWASP's advice for CSV
/// injection), unless it is a plain number such as `-3`.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn formulas_are_neutralised_and_numbers_kept() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("+1+2"), "'+1+2");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("-3"), "-3");
        assert_eq!(spreadsheet_safe("Update the plan"), "Update the plan");
    }
}
