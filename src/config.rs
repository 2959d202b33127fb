//! Settings: `qaloop.toml`, read with the `config` crate, then `QALOOP__SECTION__KEY`
//! environment variables on top (environment wins). Unknown keys are errors: a typo must not
//! silently fall back to a default. Relative paths resolve against the config file's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::problem::{Problem, Problems};

/// Where the config file is looked for when neither `--config` nor `QALOOP_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/qaloop/qaloop.toml";

/// Everything `qaloop.toml` holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where assignments and history live.
    pub database: DatabaseSettings,
    /// Who the organisation is and where its staff list is.
    pub organisation: OrganisationSettings,
    /// The schedule file.
    pub schedule: ScheduleSettings,
    /// Working days.
    pub calendar: CalendarSettings,
    /// When the daemon reconciles, and how it logs.
    #[serde(default)]
    pub daemon: DaemonSettings,
    /// Notification timing and routing.
    #[serde(default)]
    pub notify: crate::notify::settings::NotifyConfig,
    /// The signed-link pages.
    #[serde(default)]
    pub web: crate::web::WebSettings,
    /// Ways of reaching people: `[[channels]]`.
    #[serde(default)]
    pub channels: Vec<crate::notify::ChannelSettings>,
    /// Urgent concerns: who is alerted and how insistently.
    #[serde(default)]
    pub urgent: crate::domain::UrgentSettings,
    /// The health and metrics listener.
    #[serde(default)]
    pub ops: crate::ops::settings::OpsSettings,
    /// Nightly backups.
    #[serde(default)]
    pub backup: crate::ops::settings::BackupSettings,
    /// The file the settings came from; relative paths were resolved against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (created on first run) or `postgres://…`.
    pub url: String,
    /// Pool size; SQLite has one writer whatever this says.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// `[organisation]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationSettings {
    /// Shown in notifications and reports.
    pub name: String,
    /// IANA zone whose civil dates decide periods and due dates.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Month (1–12) the financial year starts in; quarters align to it.
    #[serde(default = "default_fy_start")]
    pub financial_year_start_month: i8,
    /// HR's staff CSV; the daemon re-imports it when it changes.
    pub staff_file: PathBuf,
}

/// `[schedule]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// The schedule table.
    pub file: PathBuf,
    /// First day a new database creates work from; default: the periods containing the first run.
    pub start_date: Option<jiff::civil::Date>,
}

/// `[calendar]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSettings {
    /// GOV.UK `bank-holidays.json`.
    pub bank_holidays_file: PathBuf,
    /// Division of that file to use.
    #[serde(default = "default_division")]
    pub division: String,
}

/// `[daemon]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Reconcile every this many minutes, on the clock (0: only at `daily_at`).
    pub every_minutes: u32,
    /// Also reconcile at these local times (`HH:MM`) on working days.
    pub daily_at: Vec<String>,
    /// `text` for a terminal, `json` for log shippers.
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            every_minutes: 60,
            daily_at: vec!["07:30".into()],
            log_format: LogFormat::Text,
        }
    }
}

fn default_max_connections() -> u32 {
    5
}
fn default_timezone() -> String {
    "Europe/London".into()
}
fn default_fy_start() -> i8 {
    4
}
fn default_division() -> String {
    crate::calendar::DEFAULT_DIVISION.into()
}

/// The config path: `--config`, else `QALOOP_CONFIG`, else [`DEFAULT_CONFIG_PATH`].
/// (`QALOOP_CONFIG` reaches here through clap's `env` attribute.)
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

impl Settings {
    /// Loads the file at `path` with environment overrides, resolves relative paths, and checks
    /// the values that can be checked without reading other files.
    pub fn load(path: &Path) -> Result<Settings, Problems> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Settings::load`] with an explicit environment, so tests need not mutate the process's.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, Problems> {
        if !path.is_file() {
            return Err(Problem::new(
                path,
                "",
                "config file not found (give --config PATH or set QALOOP_CONFIG)",
            )
            .into());
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("QALOOP__"))
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("QALOOP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| Problem::new(path, "", e.to_string()))?;
        let mut settings: Settings = built
            .try_deserialize()
            .map_err(|e| Problem::new(path, "", e.to_string()))?;
        settings.source = path.to_owned();
        let base = path.parent().unwrap_or(Path::new("."));
        settings.organisation.staff_file = base.join(&settings.organisation.staff_file);
        settings.schedule.file = base.join(&settings.schedule.file);
        settings.calendar.bank_holidays_file = base.join(&settings.calendar.bank_holidays_file);
        settings.database.url = resolve_sqlite_url(&settings.database.url, base);
        if let Some(dir) = &settings.notify.templates_dir {
            settings.notify.templates_dir = Some(base.join(dir));
        }
        for file in [
            &mut settings.web.link_key_file,
            &mut settings.web.previous_link_key_file,
        ]
        .into_iter()
        .flatten()
        {
            // A systemd credential (`$CREDENTIALS_DIRECTORY/…`) is absolute once expanded.
            *file = base.join(crate::notify::settings::expand_credentials(file));
        }
        if let Some(dir) = &settings.web.templates_dir {
            settings.web.templates_dir = Some(base.join(dir));
        }
        if let Some(file) = &settings.notify.preferences_file {
            settings.notify.preferences_file = Some(base.join(file));
        }
        if let Some(file) = &settings.notify.sent_journal {
            settings.notify.sent_journal = Some(base.join(file));
        }
        if let Some(dir) = &settings.backup.dir {
            settings.backup.dir = Some(base.join(dir));
        }
        settings.validate().into_result(settings)
    }

    fn validate(&self) -> Problems {
        let mut problems = Problems::default();
        let at = |key: &str, message: String| Problem::new(&self.source, key, message);
        if jiff::tz::TimeZone::get(&self.organisation.timezone).is_err() {
            problems.push(at(
                "organisation.timezone",
                format!(
                    "unknown time zone `{}` (use an IANA name such as Europe/London)",
                    self.organisation.timezone
                ),
            ));
        }
        if !(1..=12).contains(&self.organisation.financial_year_start_month) {
            problems.push(at(
                "organisation.financial_year_start_month",
                "must be 1 to 12".into(),
            ));
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(at(
                "database.url",
                "must start with sqlite: or postgres://".into(),
            ));
        }
        if self.database.max_connections == 0 {
            problems.push(at("database.max_connections", "must be at least 1".into()));
        }
        for (key, time) in [
            (
                "notify.working_hours_start",
                &self.notify.working_hours_start,
            ),
            ("notify.working_hours_end", &self.notify.working_hours_end),
        ] {
            if parse_hh_mm(time).is_none() {
                problems.push(at(key, format!("`{time}` is not a time (HH:MM)")));
            }
        }
        let start = parse_hh_mm(&self.notify.working_hours_start);
        let end = parse_hh_mm(&self.notify.working_hours_end);
        if self.notify.deliver_at.is_empty() {
            problems.push(at(
                "notify.deliver_at",
                "give at least one delivery time, e.g. [\"08:00\"]".into(),
            ));
        }
        for time in &self.notify.deliver_at {
            match (parse_hh_mm(time), start, end) {
                (None, _, _) => problems.push(at(
                    "notify.deliver_at",
                    format!("`{time}` is not a time (HH:MM)"),
                )),
                (Some(t), Some(start), Some(end)) if t < start || t >= end => problems.push(at(
                    "notify.deliver_at",
                    format!(
                        "`{time}` is outside working hours ({}–{}): messages would wait \
                             for the next day",
                        self.notify.working_hours_start, self.notify.working_hours_end
                    ),
                )),
                _ => {}
            }
        }
        if self.web.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(at(
                "web.listen",
                format!(
                    "`{}` is not an address and port (e.g. 127.0.0.1:8080)",
                    self.web.listen
                ),
            ));
        }
        if !(1..=365).contains(&self.web.link_days) {
            problems.push(at("web.link_days", "must be 1 to 365".into()));
        }
        if let Some(file) = &self.notify.sent_journal {
            // Checked here, not at the first dispatch: a journal that cannot be opened is only
            // a warning then (the dispatch falls back), and nobody reads warnings in time.
            let folder = file.parent().filter(|p| !p.as_os_str().is_empty());
            if file.is_dir() {
                problems.push(at(
                    "notify.sent_journal",
                    format!(
                        "{} is a folder; name a file in it, e.g. qaloop.sent",
                        file.display()
                    ),
                ));
            } else if let Some(folder) = folder
                && !folder.is_dir()
            {
                problems.push(at(
                    "notify.sent_journal",
                    format!("its folder {} does not exist", folder.display()),
                ));
            }
        }
        if self.notify.give_up_after_working_days == 0 {
            problems.push(at(
                "notify.give_up_after_working_days",
                "must be at least 1".into(),
            ));
        }
        let names: Vec<&str> = self.channels.iter().map(|c| c.name()).collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                problems.push(at(
                    &format!("channels[{i}].name"),
                    format!("duplicate channel name `{name}`"),
                ));
            }
        }
        for (i, route) in self.notify.routes.iter().enumerate() {
            for kind in &route.kinds {
                if kind != "*" && crate::notify::Kind::parse(kind).is_none() {
                    problems.push(at(
                        &format!("notify.routes[{i}].kinds"),
                        format!("unknown kind `{kind}`"),
                    ));
                }
            }
            for channel in &route.channels {
                if !names.contains(&channel.as_str()) {
                    problems.push(at(
                        &format!("notify.routes[{i}].channels"),
                        format!("no channel is named `{channel}`"),
                    ));
                }
            }
        }
        if let Some(admin) = &self.notify.admin_channel
            && !names.contains(&admin.as_str())
        {
            problems.push(at(
                "notify.admin_channel",
                format!("no channel is named `{admin}`"),
            ));
        }
        for time in &self.daemon.daily_at {
            if parse_hh_mm(time).is_none() {
                problems.push(at(
                    "daemon.daily_at",
                    format!("`{time}` is not a time (HH:MM)"),
                ));
            }
        }
        if self.daemon.every_minutes > 0
            && !60u32.is_multiple_of(self.daemon.every_minutes)
            && !self.daemon.every_minutes.is_multiple_of(60)
        {
            problems.push(at(
                "daemon.every_minutes",
                "must divide an hour (1, 2, 5, 10, 15, 20, 30) or be whole hours (60, 120, …)"
                    .into(),
            ));
        }
        problems
            .0
            .extend(crate::ops::settings::validate(&self.ops, &self.backup, &self.source).0);
        problems
    }

    /// The organisation's time zone (validated at load).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.organisation.timezone).expect("validated at load")
    }

    /// The daily reconcile times (validated at load).
    pub fn daily_times(&self) -> Vec<jiff::civil::Time> {
        self.daemon
            .daily_at
            .iter()
            .filter_map(|t| parse_hh_mm(t))
            .collect()
    }
}

/// Parses `HH:MM`.
pub fn parse_hh_mm(text: &str) -> Option<jiff::civil::Time> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    jiff::civil::Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// The file path and query of a `sqlite:` URL; `None` for other URLs and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    (!path.is_empty() && path != ":memory:").then_some((path, query))
}

/// Makes a relative SQLite path relative to the config file's folder, as every other path is.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some((path, query)) = sqlite_file(url).filter(|(p, _)| !p.starts_with('/')) else {
        return url.to_owned();
    };
    let joined = base.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("qaloop.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const MINIMAL: &str = r#"
[database]
url = "sqlite://data/qaloop.db"
[organisation]
name = "Test"
staff_file = "staff.csv"
[schedule]
file = "schedule.toml"
[calendar]
bank_holidays_file = "bank-holidays.json"
"#;

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load_with_env(&write(dir.path(), MINIMAL), []).unwrap();
        assert_eq!(s.organisation.staff_file, dir.path().join("staff.csv"));
        assert_eq!(
            s.database.url,
            format!("sqlite://{}", dir.path().join("data/qaloop.db").display())
        );
        assert_eq!(s.organisation.timezone, "Europe/London");
        assert_eq!(s.daemon.every_minutes, 60);
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = [(
            "QALOOP__DATABASE__URL".to_owned(),
            "postgres://db/qaloop".to_owned(),
        )];
        let s = Settings::load_with_env(&write(dir.path(), MINIMAL), env).unwrap();
        assert_eq!(s.database.url, "postgres://db/qaloop");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace("name = \"Test\"", "name = \"Test\"\ntimezon = \"UTC\"");
        let err = Settings::load_with_env(&write(dir.path(), &text), []).unwrap_err();
        assert!(err.to_string().contains("timezon"), "{err}");
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace(
            "name = \"Test\"",
            "name = \"Test\"\ntimezone = \"Mars/Olympus\"",
        ) + "[daemon]\ndaily_at = [\"7:30\"]\n";
        let err = Settings::load_with_env(&write(dir.path(), &text), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("organisation.timezone"), "{err}");
        assert!(err.contains("daemon.daily_at"), "{err}");
    }

    #[test]
    fn delivery_times_must_be_times_inside_working_hours() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.to_owned() + "[notify]\ndeliver_at = [\"07:00\", \"noon\"]\n";
        let err = Settings::load_with_env(&write(dir.path(), &text), [])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notify.deliver_at: `07:00` is outside working hours (08:00–18:00)"),
            "{err}"
        );
        assert!(err.contains("`noon` is not a time"), "{err}");
    }

    #[test]
    fn a_sent_journal_resolves_against_the_config_folder_and_its_folder_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.to_owned() + "[notify]\nsent_journal = \"qaloop.sent\"\n";
        let s = Settings::load_with_env(&write(dir.path(), &text), []).unwrap();
        assert_eq!(s.notify.sent_journal, Some(dir.path().join("qaloop.sent")));

        let text = MINIMAL.to_owned() + "[notify]\nsent_journal = \"state/qaloop.sent\"\n";
        let err = Settings::load_with_env(&write(dir.path(), &text), [])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notify.sent_journal: its folder") && err.contains("does not exist"),
            "{err}"
        );

        let text = MINIMAL.to_owned() + "[notify]\nsent_journal = \".\"\n";
        let err = Settings::load_with_env(&write(dir.path(), &text), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a folder"), "{err}");
    }
}
