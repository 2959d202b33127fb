//! What `qaloop check` verifies beyond the files themselves: that `serve` can run here and now.
//! The database answers and is migrated or migratable, file channels can write their folders,
//! the SQLite folder can take its lock file, secrets files are private. And when the settings
//! file itself is broken, the schedule, calendar and staff files it names are still checked, so
//! one run shows every problem.
//!
//! **Invariant:** changes nothing: the database is opened read-only (SQLite) or only read
//! (PostgreSQL), and a writability probe removes the file it made.

use std::path::{Path, PathBuf};

use crate::calendar::Calendar;
use crate::config::Settings;
use crate::notify::ChannelSettings;
use crate::notify::settings::expand_credentials;
use crate::problem::{Problem, Problems};
use crate::schedule::Schedule;
use crate::store::stats::{MigrationState, inspect};

/// What the environment checks found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Things that stop `serve` (exit 78).
    pub problems: Problems,
    /// Things to fix that do not stop it.
    pub warnings: Vec<String>,
    /// What was checked and found fine, for the summary.
    pub notes: Vec<String>,
}

/// Checks the database, folders and secrets the settings name.
pub async fn environment(settings: &Settings) -> Findings {
    let mut f = Findings::default();
    let at = |key: &str, message: String| Problem::new(&settings.source, key, message);
    let db = crate::ops::load::describe_database(&settings.database.url);
    match inspect(&settings.database.url).await {
        Ok(MigrationState::Current) => f.notes.push(format!("database: {db}: up to date")),
        Ok(MigrationState::Pending(n)) => f.notes.push(format!(
            "database: {db}: reachable; {n} migration(s) will be applied at start"
        )),
        Ok(MigrationState::Incompatible(why)) => f.problems.push(at(
            "database.url",
            format!("{db}: cannot be migrated: {why}"),
        )),
        Err(e) => f.problems.push(at("database.url", e.to_string())),
    }
    if let Some((path, _)) = crate::config::sqlite_file(&settings.database.url)
        && let Some(dir) = Path::new(path).parent().filter(|d| d.is_dir())
        && let Err(why) = writable(dir)
    {
        f.problems.push(at(
            "database.url",
            format!(
                "the database folder {} is not writable ({why}): SQLite needs it for its journal and qaloop for its lock file",
                dir.display()
            ),
        ));
    }
    f.notes
        .push(match crate::notify::journal::configured(settings) {
            Some(journal) => format!("sent journal: {}", journal.display()),
            None => "sent journal: none; each delivery is recorded in the database at once \
                 (notify.sent_journal)"
                .to_owned(),
        });
    if let Some(journal) = &settings.notify.sent_journal
        && let Err(why) = journal_writable(journal)
    {
        f.problems.push(at(
            "notify.sent_journal",
            format!(
                "{} cannot be written ({why}): the dispatcher notes each delivery there",
                journal.display()
            ),
        ));
    }
    if let Ok(Some(addr)) = settings.ops.listen_addr() {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => f.notes.push(format!("ops listener: {addr} is free")),
            Err(e) => f.warnings.push(format!(
                "ops.listen: cannot listen on {addr} ({e}); a running qaloop may hold it, otherwise serve will run without /healthz and /metrics"
            )),
        }
    }
    let base = settings.source.parent().unwrap_or(Path::new("."));
    for (i, channel) in settings.channels.iter().enumerate() {
        let key = format!("channels[{i}] ({})", channel.name());
        if let ChannelSettings::File(s) = channel {
            let dir = base.join(&s.dir);
            if let Err(why) = writable_or_creatable(&dir) {
                f.problems.push(at(
                    &format!("{key}.dir"),
                    format!("{} cannot be written: {why}", dir.display()),
                ));
            }
        }
        for (name, file) in secret_files(channel) {
            private_secret(&key, name, file, base, &mut f.warnings);
        }
    }
    f
}

/// The secret files a channel names, with their keys.
fn secret_files(channel: &ChannelSettings) -> Vec<(&'static str, &PathBuf)> {
    let mut files = Vec::new();
    match channel {
        ChannelSettings::Email(s) => {
            files.extend(s.password_file.iter().map(|p| ("password_file", p)))
        }
        ChannelSettings::File(_) => {}
        ChannelSettings::Teams(s) | ChannelSettings::Slack(s) | ChannelSettings::GoogleChat(s) => {
            files.extend(s.url_file.iter().map(|p| ("url_file", p)))
        }
        ChannelSettings::Webhook(s) => {
            files.extend(s.url_file.iter().map(|p| ("url_file", p)));
            files.extend(s.secret_file.iter().map(|p| ("secret_file", p)));
        }
    }
    files
}

/// Warns when a secret file can be read by every user (reading it at all is checked when the
/// channel is built).
fn private_secret(key: &str, name: &str, file: &Path, base: &Path, warnings: &mut Vec<String>) {
    let path = base.join(expand_credentials(file));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o004 != 0
        {
            warnings.push(format!(
                "{key}.{name}: {} is readable by every user on this machine; `chmod o-rwx` it (or use LoadCredential=)",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (key, name, path, warnings);
}

/// Whether a file can be created in `dir` (tried: permissions alone miss read-only mounts).
fn writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".qaloop-check-{}", std::process::id()));
    std::fs::File::create(&probe)
        .map(|_| {
            let _ = std::fs::remove_file(&probe);
        })
        .map_err(|e| e.to_string())
}

/// Why a SQLite database cannot be written, in plain words naming the file or folder, when
/// that is the trouble (SQLite itself says only "attempt to write a readonly database" or
/// "disk I/O error"); `None` when both are writable, or for PostgreSQL. The file is opened
/// for writing without writing anything; the folder is probed as `check` does (SQLite writes
/// its `-wal` and `-shm` files there).
pub fn sqlite_unwritable(url: &str) -> Option<String> {
    let (path, _) = crate::config::sqlite_file(url)?;
    let folder = folder_of(Path::new(&path));
    let mut problems = file_problems(path);
    if let Err(e) = writable(folder) {
        problems.push(format!(
            "no file can be created in the database's folder {}: {e}",
            folder.display()
        ));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{} (make them writable by the user qaloop runs as; it recovers by itself)",
            problems.join("; ")
        )
    })
}

/// [`sqlite_unwritable`] without the folder probe, which writes nothing at all: for
/// `/readyz`, asked every few seconds.
pub fn sqlite_files_unwritable(url: &str) -> Option<String> {
    let (path, _) = crate::config::sqlite_file(url)?;
    let problems = file_problems(path);
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// The database file and its `-wal` and `-shm` files (when they exist), each opened for
/// writing: what stops them.
fn file_problems(path: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = std::fs::File::options().write(true).open(path) {
        problems.push(format!("the database file {path} cannot be written: {e}"));
    }
    for name in [format!("{path}-wal"), format!("{path}-shm")] {
        if let Err(e) = std::fs::File::options().write(true).open(&name)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("{name} cannot be written: {e}"));
        }
    }
    problems
}

/// The sent journal can be appended to (it exists), or created in its folder; nothing is
/// written to it. (That the folder exists is a configuration check.)
fn journal_writable(file: &Path) -> Result<(), String> {
    if file.exists() {
        return std::fs::File::options()
            .append(true)
            .open(file)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    writable(folder_of(file))
}

/// The folder `path` is in: its parent, or the working folder for a bare relative name (whose
/// parent is "").
fn folder_of(path: &Path) -> &Path {
    or_working_folder(path.parent().unwrap_or(Path::new("")))
}

/// `path`, or the working folder for "".
fn or_working_folder(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// `dir` is writable, or does not exist yet and its nearest existing ancestor is.
fn writable_or_creatable(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return writable(dir);
    }
    if dir.exists() {
        return Err("it is not a folder".into());
    }
    // A relative path's last parent is "" (`outbox` from `--config qaloop.toml`): the
    // working folder.
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        let a = or_working_folder(a);
        if a.exists() && !a.is_dir() {
            return Err(format!("{} is a file, not a folder", a.display()));
        }
        if a.is_dir() {
            return writable(a).map_err(|e| {
                format!(
                    "it does not exist and cannot be created in {}: {e}",
                    a.display()
                )
            });
        }
        ancestor = a.parent();
    }
    Err("no existing parent folder".into())
}

/// When `qaloop.toml` does not load (a misspelt key, a bad value), checks the schedule, calendar
/// and staff files it names anyway, reading just those keys from the raw TOML, so their problems
/// show in the same run. Environment overrides are not applied here.
pub fn inputs_without_settings(path: &Path) -> Problems {
    let mut problems = Problems::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return problems;
    };
    let Ok(raw) = text.parse::<toml::Table>() else {
        return problems;
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let get = |section: &str, key: &str| {
        raw.get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let schedule = get("schedule", "file")
        .map(|f| base.join(f))
        .and_then(|file| {
            crate::inputs::read(&file)
                .map_err(Problems::from)
                .and_then(|text| Schedule::parse(&text, &file))
                .map_err(|p| problems.0.extend(p.0))
                .ok()
        });
    if let Some(file) = get("calendar", "bank_holidays_file").map(|f| base.join(f)) {
        let division =
            get("calendar", "division").unwrap_or_else(|| crate::calendar::DEFAULT_DIVISION.into());
        match crate::inputs::read(&file) {
            Err(p) => problems.push(p),
            Ok(text) => {
                if let Err(e) = Calendar::from_govuk_json(&text, &division) {
                    problems.push(Problem::new(&file, "", e.to_string()));
                }
            }
        }
    }
    if let (Some(schedule), Some(file)) = (
        schedule,
        get("organisation", "staff_file").map(|f| base.join(f)),
    ) && let Err(p) = crate::inputs::load_staff(&file, &schedule)
    {
        problems.0.extend(p.0);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_folder_that_does_not_exist_yet_is_creatable_in_the_working_folder() {
        // What a file channel's `dir = "outbox"` becomes with `--config qaloop.toml`: a bare
        // relative path whose last parent is "", the working folder (the crate's, in tests).
        assert_eq!(
            writable_or_creatable(Path::new("no-such-folder-qaloop-check")),
            Ok(())
        );
        assert_eq!(
            writable_or_creatable(Path::new("no-such-folder-qaloop-check/inner")),
            Ok(())
        );
    }
}
