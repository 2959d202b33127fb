//! Everything `serve` needs — settings, schedule, calendar, staff file, templates, channels —
//! read and validated together, every problem collected. `qaloop check` and SIGHUP reloads use
//! the same function, so a configuration `check` accepts is one a reload accepts.
//!
//! **Invariant:** reads files only; never touches the database or the network.

use std::path::Path;

use crate::config::Settings;
use crate::engine::Context;
use crate::inputs::{load_context, load_staff};
use crate::notify::ChannelSettings;
use crate::notify::dispatcher::Dispatcher;
use crate::org::StaffRecord;
use crate::problem::Problems;

/// A complete, validated configuration the daemon can run on.
pub struct Runtime {
    /// `qaloop.toml` with environment overrides.
    pub settings: Settings,
    /// Schedule, calendar, zone, financial year, router.
    pub ctx: Context,
    /// The channels and templates, when any channel is configured.
    pub dispatcher: Option<Dispatcher>,
    /// The staff file's rows (validated, not imported: a pass imports it).
    pub staff: Vec<StaffRecord>,
}

/// Loads and validates everything at `path`; `Err` holds every problem in every file.
pub fn load_checked(path: &Path) -> Result<Runtime, Problems> {
    load_with(Settings::load(path)?)
}

/// [`load_checked`] for settings already loaded.
pub fn load_with(settings: Settings) -> Result<Runtime, Problems> {
    let mut problems = check_base_url(&settings);
    let ctx = load_context(&settings)
        .map_err(|p| problems.0.extend(p.0))
        .ok();
    let staff = ctx.as_ref().and_then(|ctx| {
        load_staff(&settings.organisation.staff_file, &ctx.schedule)
            .map(|staff| staff.records)
            .map_err(|p| problems.0.extend(p.0))
            .ok()
    });
    // Templates are checked even without channels: a broken override is an error either way.
    if let Err(p) = crate::notify::registry::load_templates(&settings) {
        problems.0.extend(p.0);
    }
    if let Err(p) = crate::notify::registry::build_channels(&settings) {
        problems.0.extend(p.0);
    }
    if let Err(p) = crate::web::templates::load(settings.web.templates_dir.as_deref()) {
        problems.0.extend(p.0);
    }
    if let Err(p) = crate::inputs::link_keys(&settings) {
        problems.0.extend(p.0);
    }
    let (Some(ctx), Some(staff), true) = (ctx, staff, problems.is_empty()) else {
        return Err(problems);
    };
    let dispatcher = crate::notify::registry::build_dispatcher(&settings, &ctx)?;
    Ok(Runtime {
        settings,
        ctx,
        dispatcher,
        staff,
    })
}

/// `notify.base_url` must be an absolute http(s) URL: every link in every message starts with it.
fn check_base_url(settings: &Settings) -> Problems {
    let url = &settings.notify.base_url;
    let problem = match reqwest::Url::parse(url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "`{url}` is not an http(s) URL; write the address people open, e.g. https://qaloop.council.gov.uk"
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("`{url}` has no host")),
        Ok(_) => None,
        Err(e) => Some(format!(
            "`{url}` is not an absolute URL ({e}); write the address people open, e.g. https://qaloop.council.gov.uk"
        )),
    };
    let mut problems = Problems::default();
    if let Some(message) = problem {
        problems.push(crate::problem::Problem::new(
            &settings.source,
            "notify.base_url",
            message,
        ));
    }
    problems
}

/// The database as logs may show it: backend and file, or backend, host, port and database
/// name — never a user name or password.
pub fn describe_database(url: &str) -> String {
    if let Some((path, _)) = crate::config::sqlite_file(url) {
        return format!("sqlite {path}");
    }
    if url.starts_with("sqlite:") {
        return "sqlite (in memory)".into();
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    // Credentials, when present, end at the last `@` of the authority.
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host.is_empty() { "localhost" } else { host };
    let host = if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    format!("postgres {host}/{db}")
}

/// `name (kind)` of each channel, for the start-up line.
pub fn describe_channels(channels: &[ChannelSettings]) -> String {
    if channels.is_empty() {
        return "none".into();
    }
    channels
        .iter()
        .map(|c| {
            let kind = match c {
                ChannelSettings::Email(_) => "email",
                ChannelSettings::File(_) => "file",
                ChannelSettings::Teams(_) => "teams",
                ChannelSettings::Slack(_) => "slack",
                ChannelSettings::GoogleChat(_) => "google_chat",
                ChannelSettings::Webhook(_) => "webhook",
            };
            format!("{} ({kind})", c.name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_descriptions_never_carry_credentials() {
        assert_eq!(
            describe_database("postgres://qaloop:s3cret@db.council.internal/qa?sslmode=require"),
            "postgres db.council.internal:5432/qa"
        );
        assert_eq!(
            describe_database("postgresql://u:p%40ss@10.0.0.5:6432/qaloop"),
            "postgres 10.0.0.5:6432/qaloop"
        );
        assert_eq!(
            describe_database("sqlite:///var/lib/qaloop/qaloop.db"),
            "sqlite /var/lib/qaloop/qaloop.db"
        );
        assert!(!describe_database("postgres://user:hunter2@h/d").contains("hunter2"));
    }
}
