//! Reading the files the settings name — schedule, bank holidays, staff — into validated values.
//! The imperative shell around the pure parsers: every problem in every file is collected, so
//! `qaloop check` can show them all at once.

use std::path::Path;

use jiff::civil::Date;
use sha2::{Digest, Sha256};

use crate::calendar::Calendar;
use crate::config::Settings;
use crate::engine::Context;
use crate::org::StaffRecord;
use crate::org::csv::parse_staff;
use crate::problem::{Problem, Problems};
use crate::schedule::{FinancialYear, Schedule};

/// Reads a file as text, turning IO errors into a [`Problem`] about that file.
pub fn read(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path).map_err(|e| Problem::new(path, "", format!("cannot read: {e}")))
}

/// Builds the engine's [`Context`] from the schedule and bank-holiday files.
pub fn load_context(settings: &Settings) -> Result<Context, Problems> {
    let mut problems = Problems::default();
    let schedule = read(&settings.schedule.file)
        .map_err(Problems::from)
        .and_then(|text| Schedule::parse(&text, &settings.schedule.file));
    let calendar = read(&settings.calendar.bank_holidays_file)
        .map_err(Problems::from)
        .and_then(|text| {
            Calendar::from_govuk_json(&text, &settings.calendar.division).map_err(|e| {
                Problem::new(&settings.calendar.bank_holidays_file, "", e.to_string()).into()
            })
        });
    let schedule = schedule.map_err(|p| problems.0.extend(p.0)).ok();
    let calendar = calendar.map_err(|p| problems.0.extend(p.0)).ok();
    match (schedule, calendar) {
        (Some(schedule), Some(calendar)) if problems.is_empty() => Ok(Context {
            schedule,
            calendar,
            tz: settings.time_zone(),
            fy: FinancialYear::starting_in(settings.organisation.financial_year_start_month)
                .expect("validated at load"),
            start_date: settings.schedule.start_date,
            announcer: router(settings)?
                .map(|r| std::sync::Arc::new(r) as std::sync::Arc<dyn crate::engine::Announcer>),
        }),
        _ => Err(problems),
    }
}

/// The notification router, when channels are configured.
fn router(settings: &Settings) -> Result<Option<crate::notify::router::Router>, Problems> {
    if settings.channels.is_empty() {
        return Ok(None);
    }
    let preferences = match &settings.notify.preferences_file {
        None => Vec::new(),
        Some(path) => {
            let text = read(path)?;
            let file: crate::notify::settings::PreferencesFile =
                toml::from_str(&text).map_err(|e| {
                    let location = e
                        .span()
                        .map(|s| format!("line {}", crate::problem::line_of(&text, s.start)))
                        .unwrap_or_default();
                    Problem::new(path, location, e.message().trim().to_owned())
                })?;
            file.person
        }
    };
    let router = crate::notify::router::Router::new(
        &settings.notify,
        &settings.channels,
        &settings.organisation.name,
        settings.time_zone(),
        preferences,
    );
    Ok(Some(match link_keys(settings)? {
        Some(keys) => router.with_links(keys),
        None => router,
    }))
}

/// The keys links are signed with, when `[web] link_key_file` is set (created first when the
/// settings ask for it and it is missing).
pub fn link_keys(settings: &Settings) -> Result<Option<crate::links::LinkKeys>, Problems> {
    let Some(path) = &settings.web.link_key_file else {
        return Ok(None);
    };
    let problem = |key: &str, e: crate::links::KeyFileError| {
        Problems::from(Problem::new(&settings.source, key, e.to_string()))
    };
    // `$CREDENTIALS_DIRECTORY/…` names a systemd credential, as for the channels' secrets.
    let expand = crate::notify::settings::expand_credentials;
    let current = crate::links::load_or_create_key(&expand(path), settings.web.create_link_key)
        .map_err(|e| problem("web.link_key_file", e))?;
    let previous = settings
        .web
        .previous_link_key_file
        .as_deref()
        .map(|p| crate::links::load_or_create_key(&expand(p), false))
        .transpose()
        .map_err(|e| problem("web.previous_link_key_file", e))?;
    Ok(Some(crate::links::LinkKeys::new(
        current,
        previous,
        settings.web.link_days,
    )))
}

/// A staff file, read and validated.
pub struct StaffFile {
    /// The validated rows.
    pub records: Vec<StaffRecord>,
    /// SHA-256 of the file's bytes, so the daemon re-imports only when it changes.
    pub digest: String,
}

/// Reads and validates a staff CSV against the schedule's roles.
pub fn load_staff(path: &Path, schedule: &Schedule) -> Result<StaffFile, Problems> {
    let text = read(path)?;
    let records = parse_staff(&text, path, schedule)?;
    Ok(StaffFile {
        records,
        digest: digest(&text),
    })
}

/// Hex SHA-256 of `text`.
pub fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Warnings that do not stop qaloop but should be fixed: the calendar running out within the
/// window, roles that own work but have nobody holding them.
pub fn warnings(
    ctx: &Context,
    records: &[StaffRecord],
    from: Date,
    to: Date,
    file: &Path,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for year in from.year()..=to.year() {
        if !ctx.calendar.covers_year(year) {
            warnings.push(format!(
                "{}: no bank holidays for {year}; every weekday that year counts as a working day \
                 (update the file from https://www.gov.uk/bank-holidays.json)",
                file.display()
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for activity in &ctx.schedule.activities {
        if seen.insert(activity.owner_role.as_str())
            && !records
                .iter()
                .any(|r| r.roles.contains(&activity.owner_role))
        {
            warnings.push(format!(
                "nobody in the staff file holds role `{}`, which owns `{}`",
                activity.owner_role, activity.id
            ));
        }
    }
    warnings
}
