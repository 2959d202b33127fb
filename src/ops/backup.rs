//! Backups of a SQLite database: `qaloop backup PATH` (online: `VACUUM INTO`, safe while
//! `serve` runs), nightly backups by `serve` with retention, and `qaloop restore PATH` (only
//! while no `serve` holds the database). Every copy is checked with `PRAGMA integrity_check`
//! before it counts. PostgreSQL is backed up with its own tools (`pg_dump`).
//!
//! **Invariants:** a backup is written under a temporary name and renamed only after its
//! integrity check passed, so a file at the requested path is always a good copy; an existing
//! file is never overwritten; a restore never runs while the single-instance lock is held.

use std::path::{Path, PathBuf};

use jiff::{Timestamp, Zoned};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::store::stats::{LAST_BACKUP_KEY, MigrationState};
use crate::store::{Store, StoreError, format_instant};

/// Why a backup or restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database is PostgreSQL.
    #[error(
        "the database is PostgreSQL: back it up with its own tools, e.g. `pg_dump --format=custom --file=qaloop.dump DBNAME` (restore with `pg_restore --clean --dbname=DBNAME qaloop.dump`); see the README's Operations section"
    )]
    Postgres,
    /// The target exists.
    #[error("{0} already exists; choose a new file name (backups never overwrite)")]
    Exists(PathBuf),
    /// The source of a restore does not exist.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// A copy failed its integrity check.
    #[error("{path} failed its integrity check: {detail}")]
    Corrupt {
        /// The file checked.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The backup was made by a qaloop this one cannot run.
    #[error("{path} cannot be restored by this qaloop: {why}")]
    Incompatible {
        /// The backup.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// `serve` holds the database.
    #[error("{0}")]
    Running(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl BackupError {
    /// The process exit code (sysexits).
    pub fn exit_code(&self) -> u8 {
        match self {
            BackupError::Exists(_) => 73,  // EX_CANTCREAT
            BackupError::Missing(_) => 66, // EX_NOINPUT
            BackupError::Corrupt { .. } | BackupError::Incompatible { .. } => 65, // EX_DATAERR
            BackupError::Running(_) => 75, // EX_TEMPFAIL
            BackupError::Postgres => 69,   // EX_UNAVAILABLE
            _ => 1,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// `PRAGMA integrity_check` on the SQLite file at `path`, opened read-only.
pub async fn integrity_check(path: &Path) -> Result<(), BackupError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| BackupError::Corrupt {
            path: path.to_owned(),
            detail: format!("cannot open it as a SQLite database: {e}"),
        })?;
    let rows: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await;
    conn.close().await.ok();
    match rows {
        Ok(rows) if rows == ["ok"] => Ok(()),
        Ok(rows) => Err(BackupError::Corrupt {
            path: path.to_owned(),
            detail: rows.join("; "),
        }),
        Err(e) => Err(BackupError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Backs the store up to `target` (which must not exist), checks the copy and records the time
/// in `meta` (`now`).
pub async fn backup(store: &Store, target: &Path, now: Timestamp) -> Result<u64, BackupError> {
    if target.exists() {
        return Err(BackupError::Exists(target.to_owned()));
    }
    let partial = partial_name(target);
    let _ = std::fs::remove_file(&partial);
    let result = async {
        store
            .vacuum_into(&partial.to_string_lossy())
            .await?
            .ok_or(BackupError::Postgres)?;
        integrity_check(&partial).await?;
        // Never replace a file that appeared meanwhile: hard-link, then drop the partial name.
        std::fs::hard_link(&partial, target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(target.to_owned())
            } else {
                io("cannot create", target)(e)
            }
        })?;
        Ok::<_, BackupError>(())
    }
    .await;
    let _ = std::fs::remove_file(&partial);
    result?;
    store
        .set_meta(LAST_BACKUP_KEY, &format_instant(now))
        .await?;
    Ok(std::fs::metadata(target).map(|m| m.len()).unwrap_or(0))
}

fn partial_name(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

/// Replaces the SQLite database at `db` with the backup at `source`, after checking the backup.
/// The caller holds the single-instance lock (see `daemon::lock_sqlite`).
pub async fn restore(source: &Path, db: &Path) -> Result<(), BackupError> {
    if !source.is_file() {
        return Err(BackupError::Missing(source.to_owned()));
    }
    integrity_check(source).await?;
    let url = format!("sqlite://{}", source.display());
    match crate::store::stats::inspect(&url).await? {
        MigrationState::Incompatible(why) => {
            return Err(BackupError::Incompatible {
                path: source.to_owned(),
                why,
            });
        }
        MigrationState::Current | MigrationState::Pending(_) => {}
    }
    let incoming = partial_name(db);
    std::fs::copy(source, &incoming).map_err(io("cannot copy the backup to", &incoming))?;
    // The old database's journal belongs to the old file: remove it with the file.
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    std::fs::rename(&incoming, db).map_err(io("cannot replace", db))?;
    Ok(())
}

/// When `serve` makes its nightly backup and which old ones it deletes.
#[derive(Debug, Clone)]
pub struct Nightly {
    /// The folder.
    pub dir: PathBuf,
    /// How many to keep.
    pub keep: usize,
    /// Local time of day.
    pub at: jiff::civil::Time,
    /// The local date of the last backup made (or skipped as already done).
    last: Option<jiff::civil::Date>,
}

impl Nightly {
    /// Backups into `dir` at local time `at`, keeping `keep`; none made yet.
    pub fn new(dir: PathBuf, keep: usize, at: jiff::civil::Time) -> Nightly {
        Nightly {
            dir,
            keep: keep.max(1),
            at,
            last: None,
        }
    }

    /// From `[backup]`, when a folder is set; `now` counts as done if past `at` already, so a
    /// restart in the afternoon does not back up at once.
    pub fn from_settings(settings: &crate::config::Settings, now: &Zoned) -> Option<Nightly> {
        let dir = settings.backup.dir.clone()?;
        let at = crate::config::parse_hh_mm(&settings.backup.at)?;
        Some(Nightly {
            dir,
            keep: settings.backup.keep.max(1) as usize,
            at,
            last: (now.time() >= at).then(|| now.date()),
        })
    }

    /// Whether the nightly backup is due at `now`; records it as done if so.
    pub fn due(&mut self, now: &Zoned) -> bool {
        if now.time() >= self.at && self.last != Some(now.date()) {
            self.last = Some(now.date());
            return true;
        }
        false
    }

    /// Makes tonight's backup in the folder and deletes all but the newest `keep`.
    pub async fn run(&self, store: &Store, now: &Zoned) -> Result<PathBuf, BackupError> {
        std::fs::create_dir_all(&self.dir).map_err(io("cannot create", &self.dir))?;
        let name = format!("qaloop-{}.db", now.strftime("%Y-%m-%dT%H%M"));
        let target = self.dir.join(name);
        backup(store, &target, now.timestamp()).await?;
        let mut existing: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io("cannot list", &self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("qaloop-") && n.ends_with(".db"))
            })
            .collect();
        existing.sort();
        let excess = existing.len().saturating_sub(self.keep);
        for old in &existing[..excess] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!(file = %old.display(), error = %e, "cannot delete an old backup");
            }
        }
        Ok(target)
    }
}
