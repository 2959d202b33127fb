//! Storage: SQLite (embedded default) and PostgreSQL behind one type.
//!
//! Each operation is written once: the [`on_pool!`] macro expands the same body for each backend,
//! so the SQL text is shared (SQLite accepts `$1` placeholders) and only the migrations differ.
//! The one exception is the bulk insert of new assignments and their history
//! (`InsertAssignments`), the hot path of reconcile, which has one statement shape per backend.
//! Dates and instants are stored as text on both (see `migrations/`).
//!
//! **Invariant:** the only module that writes SQL. Every state change and its history rows
//! commit in one transaction. SQL never calls `now()`: the caller's clock is a parameter, so a
//! test can run a year.

pub mod model;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, PgPool, QueryBuilder, SqlitePool, Transaction};

pub use model::*;

use crate::domain::{Actor, Assignee, Assignment, HistoryEntry, NewAssignment, Status, Via};
use crate::org::{Person, StaffRecord};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The `meta` key of the staff list's revision (see [`Store::staff_revision`]).
const STAFF_REVISION_KEY: &str = "staff_revision";

/// Rows per multi-row INSERT: well under both backends' bind-parameter limits.
const INSERT_CHUNK: usize = 1000;

/// How long a SQLite statement waits for another connection's lock before `SQLITE_BUSY`: two
/// writers queue instead of failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Store::checkpoint`] waits for readers before leaving the WAL as it is.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (or could not be reached).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what qaloop writes (hand-edited data?).
    #[error("corrupt value in column {column}: `{value}`")]
    Corrupt {
        /// Which column.
        column: &'static str,
        /// What it held.
        value: String,
    },
    /// No assignment has that id.
    #[error("no assignment has id {0}")]
    NotFound(i64),
    /// Other processes kept winning the race for the same write; try again later.
    #[error("{0}: other qaloop processes kept changing the same data; try again")]
    Contended(&'static str),
    /// The database could not be reached or opened; says where and why.
    #[error("cannot reach the database at {target}: {cause}")]
    Unreachable {
        /// `host:port/db` or the SQLite file (never credentials).
        target: String,
        /// What went wrong, in plain words.
        cause: String,
    },
    /// The dispatcher's sent journal (`notify::journal`, a file on this machine's disk) could
    /// not be read or written; says which file and why.
    #[error("{0}")]
    Journal(String),
}

/// The database qaloop keeps its truth in.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// How many pooled connections dispatch lanes may hold for their delivery notes at once
    /// (`DeliveryNotes`): all but one of the pool, so that the claim of the next batch and the
    /// recording of outcomes, which the lanes wait on, always find a connection.
    lane_holds: std::sync::Arc<tokio::sync::Semaphore>,
    /// SQLite: when the database was last seen unwritable (see [`Store::saw_unwritable`]).
    unwritable: UnwritableMark,
}

/// When a SQLite database was last seen unwritable. A connection opened before that moment is
/// closed instead of handed out: one SQLite opened while its files could not be written got
/// them read-only, and so did the WAL index it shares with every connection of the process to
/// that file, so writes fail ("attempt to write a readonly database") even once the files are
/// writable again, for as long as any such connection stays open. Retiring them all lets the
/// next pass open the files afresh.
#[derive(Debug, Clone, Default)]
struct UnwritableMark(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl UnwritableMark {
    fn set(&self) {
        self.set_at(std::time::Instant::now());
    }

    fn set_at(&self, at: std::time::Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Whether a connection `age` old was opened at or before the mark.
    fn predates(&self, age: Duration) -> bool {
        self.predates_at(std::time::Instant::now(), age)
    }

    /// [`UnwritableMark::predates`], with the present moment given.
    fn predates_at(&self, now: std::time::Instant, age: Duration) -> bool {
        let mark = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        mark.is_some_and(|mark| now.checked_sub(age).is_none_or(|opened| opened <= mark))
    }
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body against whichever pool the store has. The body is expanded once per
/// backend, so it is type-checked against both.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Ids per query when a caller asks for many by id (SQLite allows 32,766 bound parameters).
pub(crate) const ID_CHUNK: usize = 5000;

pub mod actions;
pub mod concerns;
pub mod lease;
pub mod outbox;
pub mod records;
pub mod stats;
pub mod wake;

pub use actions::{ActionChanged, ActionFilter, ActionHistoryEntry};
pub use concerns::{Acknowledged, NewConcern};
pub use outbox::{DeliveryNotes, NewOutbox, NoteInFlight, OutboxRow, OutboxStatus};

/// Builds the notifications caused by newly created assignments, inside their transaction:
/// given each new row's id and what was asked for, the outbox rows to queue.
pub type NoticesFor<'a> = &'a (dyn Fn(&[(i64, &NewAssignment)]) -> Vec<NewOutbox> + Sync);

/// Builds the notifications for work moved from leavers: given (assignment id, from, to).
pub type MovedNotices<'a> = &'a (dyn Fn(&[(i64, String, String)]) -> Vec<NewOutbox> + Sync);

/// Starting a write transaction: SQLite takes its single write lock up front (`BEGIN IMMEDIATE`)
/// so two writers queue on `busy_timeout` instead of failing with `SQLITE_BUSY` at upgrade time.
trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

#[derive(FromRow)]
struct AssignmentRow {
    id: i64,
    activity_id: String,
    period_label: String,
    period_start: String,
    period_end: String,
    slot: String,
    assignee: String,
    subject: String,
    trigger_id: Option<i64>,
    due: String,
    status: String,
    created_at: String,
    created_late: bool,
    before_go_live: bool,
    completed_at: Option<String>,
    completed_by: Option<String>,
    note: Option<String>,
}

const ASSIGNMENT_COLUMNS: &str = "id, activity_id, period_label, period_start, period_end, slot, \
    assignee, subject, trigger_id, due, status, created_at, created_late, completed_at, \
    completed_by, note, before_go_live";

const STAFF_COLUMNS: &str = "staff_id, name, email, roles, line_manager_id, team, service, \
    locality, chat_id, start_date, active_from, left_on";

#[derive(FromRow)]
struct StaffRow {
    staff_id: String,
    name: String,
    email: String,
    roles: String,
    line_manager_id: Option<String>,
    team: String,
    service: String,
    locality: String,
    chat_id: Option<String>,
    start_date: Option<String>,
    active_from: Option<String>,
    left_on: Option<String>,
}

fn date(column: &'static str, text: &str) -> Result<Date, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt {
        column,
        value: text.to_owned(),
    })
}

fn opt_date(column: &'static str, text: Option<&str>) -> Result<Option<Date>, StoreError> {
    text.map(|t| date(column, t)).transpose()
}

fn instant(column: &'static str, text: &str) -> Result<Timestamp, StoreError> {
    parse_instant(text).map_err(|_| StoreError::Corrupt {
        column,
        value: text.to_owned(),
    })
}

impl TryFrom<AssignmentRow> for Assignment {
    type Error = StoreError;
    fn try_from(r: AssignmentRow) -> Result<Self, StoreError> {
        Ok(Assignment {
            id: r.id,
            period_start: date("period_start", &r.period_start)?,
            period_end: date("period_end", &r.period_end)?,
            due: date("due", &r.due)?,
            status: Status::parse(&r.status).ok_or_else(|| StoreError::Corrupt {
                column: "status",
                value: r.status.clone(),
            })?,
            created_at: instant("created_at", &r.created_at)?,
            completed_at: r
                .completed_at
                .as_deref()
                .map(|t| instant("completed_at", t))
                .transpose()?,
            activity_id: r.activity_id,
            period_label: r.period_label,
            slot: r.slot,
            assignee: Assignee::parse(&r.assignee),
            subject: (!r.subject.is_empty()).then_some(r.subject),
            trigger_id: r.trigger_id,
            created_late: r.created_late,
            before_go_live: r.before_go_live,
            completed_by: r.completed_by,
            note: r.note,
        })
    }
}

impl TryFrom<StaffRow> for Person {
    type Error = StoreError;
    fn try_from(r: StaffRow) -> Result<Self, StoreError> {
        Ok(Person {
            active_from: opt_date("active_from", r.active_from.as_deref())?,
            left_on: opt_date("left_on", r.left_on.as_deref())?,
            record: StaffRecord {
                start_date: opt_date("start_date", r.start_date.as_deref())?,
                staff_id: r.staff_id,
                name: r.name,
                email: r.email,
                roles: r
                    .roles
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                line_manager_id: r.line_manager_id,
                team: r.team,
                service: r.service,
                locality: r.locality,
                chat_id: r.chat_id,
            },
        })
    }
}

/// A staff change the caller has worked out, for [`Store::sync_staff`] to apply.
#[derive(Debug, Clone)]
pub struct StaffChange {
    /// The person's new state.
    pub person: Person,
    /// `joined`, `changed`, `left` or `rejoined`.
    pub event: &'static str,
    /// Names of the fields that changed (never their values).
    pub detail: String,
}

/// An open assignment to move from a leaver, worked out by the caller.
#[derive(Debug, Clone)]
pub struct Reassignment {
    /// The leaver.
    pub from: String,
    /// Who takes their open work.
    pub to: String,
}

/// A pooled connection idle for less than this is handed out without a ping first.
///
/// sqlx pings every connection it takes from the pool by default: a round trip before every
/// statement, which doubled the round trips of the dispatcher's one-row writes on PostgreSQL
/// (one per message, each before the next send). A connection used within the last second is
/// taken as alive; if the server dropped it in that second, the statement fails and its caller
/// retries as after any database error (a pass, a dispatch), and sqlx closes the connection.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Whether a pooled connection may be handed out: yes if it was used within
/// [`PING_AFTER_IDLE`], else if it answers a ping.
async fn still_alive<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> bool {
    meta.idle_for < PING_AFTER_IDLE || conn.ping().await.is_ok()
}

impl Store {
    /// Connects to `url` (`sqlite://PATH`, created if missing, or `postgres://…`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let unwritable = UnwritableMark::default();
        let backend = if url.starts_with("sqlite:") {
            stats::sqlite_folder_exists(url)?;
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            Backend::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    // Each open connection holds a thread and up to 2 MiB of page cache; an
                    // idle daemon needs none of them between its looks at the outbox.
                    .idle_timeout(Duration::from_secs(60))
                    // A transaction whose rollback failed (the file became unwritable mid-
                    // write) leaves its connection inside it, and every later `BEGIN` on that
                    // connection fails ("non-zero transaction depth") even once the file is
                    // writable again: such a connection is closed, not handed out. (The pool
                    // has flushed pending rollbacks by then; this is a read of a counter.)
                    //
                    // Checked only when idle for a while: see `PING_AFTER_IDLE`.
                    .test_before_acquire(false)
                    //
                    // And one opened before the database was last seen unwritable is closed
                    // too (`UnwritableMark`).
                    .before_acquire({
                        let unwritable = unwritable.clone();
                        move |conn, meta| {
                            let retire = unwritable.predates(meta.age);
                            Box::pin(async move {
                                Ok(!retire
                                    && !sqlx::Connection::is_in_transaction(conn)
                                    && still_alive(conn, meta).await)
                            })
                        }
                    })
                    .connect_with(options)
                    .await?,
            )
        } else {
            let options = PgConnectOptions::from_str(url)?;
            // One direct connection first: an unreachable server fails in seconds with its
            // address and cause, instead of the pool's "timed out" after ten.
            sqlx::Connection::close(stats::probe_postgres(&options).await?)
                .await
                .ok();
            Backend::Postgres(Self::pg_pool(options, max_connections).await?)
        };
        Ok(Store::over(backend, max_connections, unwritable))
    }

    /// The store over `backend`; `unwritable` is the mark its SQLite pool consults.
    fn over(backend: Backend, max_connections: u32, unwritable: UnwritableMark) -> Store {
        let holds = usize::try_from(max_connections.saturating_sub(1)).unwrap_or(0);
        Store {
            backend,
            lane_holds: std::sync::Arc::new(tokio::sync::Semaphore::new(holds)),
            unwritable,
        }
    }

    /// Tells a SQLite store that its database was just seen unwritable (a pass failed, or the
    /// readiness check found a file it cannot write): every connection open now is closed
    /// before its next use, so that once the files are writable again the next pass opens
    /// them for writing (`UnwritableMark`). Nothing on PostgreSQL, whose server owns its files.
    pub fn saw_unwritable(&self) {
        if matches!(self.backend, Backend::Sqlite(_)) {
            self.unwritable.set();
        }
    }

    /// Connects to PostgreSQL with explicit options (tests use a schema per test).
    pub async fn connect_postgres(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        Ok(Store::over(
            Backend::Postgres(Self::pg_pool(options, max_connections).await?),
            max_connections,
            UnwritableMark::default(),
        ))
    }

    async fn pg_pool(options: PgConnectOptions, max: u32) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            // Checked only when idle for a while: see `PING_AFTER_IDLE`.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(async move { Ok(still_alive(conn, meta).await) }))
            .connect_with(options)
            .await
    }

    /// How many connections the pool holds open, in use or idle (0 once idle ones closed).
    pub fn open_connections(&self) -> u32 {
        on_pool!(self, |pool| pool.size())
    }

    /// `sqlite` or `postgres`, for logs and reports.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Applies any migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            // PostgreSQL: sqlx serialises concurrent migrators with an advisory lock.
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            // SQLite has no such lock: two processes starting at once on a new file can both
            // decide a migration is missing, and the second then fails on "table already
            // exists" once the first commits. Running again re-reads what is applied and
            // skips it, so a failure is retried a few times before it counts.
            Backend::Sqlite(pool) => {
                let mut attempt = 0;
                loop {
                    match SQLITE_MIGRATIONS.run(pool).await {
                        Ok(()) => break,
                        Err(e) if attempt < 4 => {
                            attempt += 1;
                            tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves what SQLite's write-ahead log holds into the database file and empties the log
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`); nothing on PostgreSQL. The daemon calls it when a
    /// pass or a dispatch is done, so that the pool closing its idle connections a minute later
    /// (SQLite checkpoints and removes the log when its last connection closes) changes no file
    /// the idle loop watches for other processes' writes. Best effort: with a reader in the way
    /// the log is not emptied, SQLite says so in its answer (not an error), and the loop then
    /// takes the close for a write once, looks, and settles again. It waits at most 200 ms for
    /// readers (a long `qaloop report` or backup), not the pool's 30 s.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Backend::Sqlite(pool) = &self.backend {
            let busy_timeout = |wait: Duration| {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA busy_timeout = {}",
                    wait.as_millis()
                )))
            };
            let mut conn = pool.acquire().await?;
            busy_timeout(CHECKPOINT_BUSY_TIMEOUT)
                .execute(&mut *conn)
                .await?;
            let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await;
            let restore = busy_timeout(SQLITE_BUSY_TIMEOUT).execute(&mut *conn).await;
            checkpoint?;
            restore?;
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    // ---- meta -----------------------------------------------------------------------------

    /// A value from the `meta` table.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Sets a `meta` value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Stores `value` under `key` unless a value is already there; returns the stored value.
    /// Two processes racing agree on one answer. Reads first: every reconcile tick asks, and
    /// only the first ever needs to write (on SQLite, a write takes the database's write lock).
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        if let Some(stored) = self.meta(key).await? {
            return Ok(stored);
        }
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?;
        });
        Ok(self.meta(key).await?.unwrap_or_else(|| value.to_owned()))
    }

    // ---- staff ----------------------------------------------------------------------------

    /// Staff history, oldest first, as (staff id, event, actor, at): what joined, changed, left
    /// or rejoined, by whom and when (never the values that changed).
    pub async fn staff_history(&self) -> Result<Vec<(String, String, String, String)>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as("SELECT staff_id, event, actor, at FROM staff_history ORDER BY id")
                .fetch_all(pool)
                .await?
        }))
    }

    /// The staff list's revision: bumped by every [`Store::sync_staff`]. An import reads it
    /// before reading the staff it diffs, and its write succeeds only if it is unchanged — so
    /// two imports at once (two `tick`s on a new database, a tick beside the daemon, two nodes)
    /// apply each change once: the later one finds the revision moved and starts again.
    pub async fn staff_revision(&self) -> Result<String, StoreError> {
        self.meta_or_insert(STAFF_REVISION_KEY, "0").await
    }

    /// Everyone qaloop knows, current and past.
    pub async fn people(&self) -> Result<Vec<Person>, StoreError> {
        let rows: Vec<StaffRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {STAFF_COLUMNS} FROM staff"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Person::try_from).collect()
    }

    /// The people with these staff ids, current and past, in no particular order; ids nobody
    /// has are left out. For the dispatcher, which needs a batch's recipients, not everyone.
    pub async fn people_by_id(&self, ids: &[&str]) -> Result<Vec<Person>, StoreError> {
        let mut rows: Vec<StaffRow> = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            on_pool!(self, |pool| {
                let mut qb = QueryBuilder::new(format!(
                    "SELECT {STAFF_COLUMNS} FROM staff WHERE staff_id IN ("
                ));
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(")");
                rows.extend(qb.build_query_as().fetch_all(pool).await?);
            });
        }
        rows.into_iter().map(Person::try_from).collect()
    }

    /// Applies staff changes and moves leavers' open work and unverified actions, all in one
    /// transaction — if the staff list is still at `revision` (see [`Store::staff_revision`]).
    /// `None`: another import got there first; nothing was written, so diff again.
    pub async fn sync_staff(
        &self,
        revision: &str,
        changes: &[StaffChange],
        reassignments: &[Reassignment],
        actor: &str,
        notices: MovedNotices<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<(i64, String, String)>>, StoreError> {
        let at = format_instant(now);
        let next = revision.parse::<u64>().unwrap_or(0) + 1;
        let moved = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // The guard: on PostgreSQL a concurrent import waits here for this row's lock and
            // then finds the revision moved; SQLite's write lock serialises them outright.
            let current = sqlx::query("UPDATE meta SET value = $1 WHERE key = $2 AND value = $3")
                .bind(next.to_string())
                .bind(STAFF_REVISION_KEY)
                .bind(revision)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if current == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            for change in changes {
                let p = &change.person;
                let r = &p.record;
                sqlx::query(
                    "INSERT INTO staff (staff_id, name, email, roles, line_manager_id, team, service, \
                     locality, chat_id, start_date, active_from, left_on, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (staff_id) DO UPDATE SET name = excluded.name, \
                     email = excluded.email, roles = excluded.roles, \
                     line_manager_id = excluded.line_manager_id, team = excluded.team, \
                     service = excluded.service, locality = excluded.locality, \
                     chat_id = excluded.chat_id, start_date = excluded.start_date, \
                     active_from = excluded.active_from, left_on = excluded.left_on, \
                     updated_at = excluded.updated_at",
                )
                .bind(&r.staff_id)
                .bind(&r.name)
                .bind(&r.email)
                .bind(r.roles.iter().map(String::as_str).collect::<Vec<_>>().join(";"))
                .bind(&r.line_manager_id)
                .bind(&r.team)
                .bind(&r.service)
                .bind(&r.locality)
                .bind(&r.chat_id)
                .bind(r.start_date.map(|d| d.to_string()))
                .bind(p.active_from.map(|d| d.to_string()))
                .bind(p.left_on.map(|d| d.to_string()))
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO staff_history (staff_id, event, actor, at, detail) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&r.staff_id)
                .bind(change.event)
                .bind(actor)
                .bind(&at)
                .bind(&change.detail)
                .execute(&mut *tx)
                .await?;
            }
            let mut moved = Vec::new();
            for re in reassignments {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE assignments SET assignee = $1 WHERE assignee = $2 AND status = 'open' \
                     RETURNING id",
                )
                .bind(&re.to)
                .bind(&re.from)
                .fetch_all(&mut *tx)
                .await?;
                for id in ids {
                    sqlx::query(
                        "INSERT INTO assignment_history (assignment_id, event, actor, at, detail, via) \
                         VALUES ($1, 'reassigned', $2, $3, $4, 'system')",
                    )
                    .bind(id)
                    .bind(actor)
                    .bind(&at)
                    .bind(format!("from {} to {} (leaver)", re.from, re.to))
                    .execute(&mut *tx)
                    .await?;
                    outbox::cancel_for_assignment(&mut tx, id, "assignee left").await?;
                    moved.push((id, re.from.clone(), re.to.clone()));
                }
            }
            for re in reassignments {
                actions::hand_over(&mut tx, &re.from, &re.to, &at).await?;
            }
            outbox::insert(&mut tx, &notices(&moved), &at).await?;
            tx.commit().await?;
            moved
        });
        Ok(Some(moved))
    }

    // ---- reconcile ------------------------------------------------------------------------

    /// The (activity, period start) pairs already materialised with a period start on or after
    /// `from`: what a no-op reconcile reads, and all it reads.
    pub async fn materialised_since(
        &self,
        from: Date,
    ) -> Result<HashSet<(String, Date)>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT activity_id, period_start FROM period_runs WHERE period_start >= $1",
            )
            .bind(from.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(a, d)| Ok((a, date("period_start", &d)?)))
            .collect()
    }

    /// Creates the assignments of one (activity, period) that do not exist yet, their history,
    /// and the marker that the period is done, in one transaction. Returns the ids created.
    /// Rows that already exist (another process got there first) are skipped by the unique key.
    /// `go_live` is the go-live date when this is a new database's first pass: rows already due
    /// before it are flagged `before_go_live`.
    #[allow(clippy::too_many_arguments)]
    pub async fn materialise(
        &self,
        activity_id: &str,
        period_start: Date,
        rows: &[NewAssignment],
        created_late: bool,
        go_live: Option<Date>,
        notices: NoticesFor<'_>,
        now: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        let at = format_instant(now);
        let ids = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let created = tx
                .insert_assignments(
                    rows,
                    (created_late, go_live),
                    &Actor::system("reconcile"),
                    &at,
                )
                .await?;
            let pairs: Vec<(i64, &NewAssignment)> =
                created.iter().map(|&(id, i)| (id, &rows[i])).collect();
            outbox::insert(&mut tx, &notices(&pairs), &at).await?;
            let ids: Vec<i64> = created.into_iter().map(|(id, _)| id).collect();
            sqlx::query(
                "INSERT INTO period_runs (activity_id, period_start, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (activity_id, period_start) DO NOTHING",
            )
            .bind(activity_id)
            .bind(period_start.to_string())
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            ids
        });
        Ok(ids)
    }

    // ---- assignments ----------------------------------------------------------------------

    /// One assignment.
    pub async fn assignment(&self, id: i64) -> Result<Assignment, StoreError> {
        let row: Option<AssignmentRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or(StoreError::NotFound(id))?.try_into()
    }

    /// Assignments with these ids (in any of `statuses`; empty: any), however many: the ids
    /// go to the database in chunks well under SQLite's limit of bound parameters.
    pub async fn assignments_with_ids(
        &self,
        ids: &[i64],
        statuses: &[Status],
    ) -> Result<Vec<Assignment>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(ID_CHUNK) {
            found.extend(
                self.assignments(&AssignmentFilter {
                    statuses: statuses.to_vec(),
                    ids: chunk.to_vec(),
                    ..Default::default()
                })
                .await?,
            );
        }
        Ok(found)
    }

    /// Assignments matching `filter`, oldest due first.
    pub async fn assignments(
        &self,
        filter: &AssignmentFilter,
    ) -> Result<Vec<Assignment>, StoreError> {
        let rows: Vec<AssignmentRow> = on_pool!(self, |pool| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE 1 = 1"
            ));
            if !filter.statuses.is_empty() {
                qb.push(" AND status IN (");
                let mut list = qb.separated(", ");
                for s in &filter.statuses {
                    list.push_bind(s.as_str());
                }
                qb.push(")");
            }
            if let Some(day) = filter.overdue_on {
                qb.push(" AND status = 'open' AND due < ")
                    .push_bind(day.to_string());
            }
            if !filter.assignees.is_empty() {
                qb.push(" AND assignee IN (");
                let mut list = qb.separated(", ");
                for a in &filter.assignees {
                    list.push_bind(a.to_string());
                }
                qb.push(")");
            }
            if let Some(activity) = &filter.activity_id {
                qb.push(" AND activity_id = ").push_bind(activity.clone());
            }
            if let Some(after) = filter.completed_after {
                qb.push(" AND completed_at > ")
                    .push_bind(format_instant(after));
            }
            if filter.triggered_only {
                qb.push(" AND trigger_id IS NOT NULL");
            }
            if !filter.ids.is_empty() {
                qb.push(" AND id IN (");
                let mut list = qb.separated(", ");
                for id in &filter.ids {
                    list.push_bind(*id);
                }
                qb.push(")");
            }
            qb.push(" ORDER BY due, id");
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(Assignment::try_from).collect()
    }

    /// Completes an open assignment, stores its record (if it was completed through a form) and
    /// creates the work it triggers, in one transaction.
    // Each argument is a distinct part of one transaction; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete(
        &self,
        id: i64,
        by: &Actor,
        note: Option<&str>,
        completed_with: Option<(&crate::domain::NewRecord, &crate::domain::RecordEffects)>,
        triggered: &[NewAssignment],
        notices: NoticesFor<'_>,
        now: Timestamp,
    ) -> Result<Completion, StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE assignments SET status = 'done', completed_at = $1, completed_by = $2, \
                 note = $3 WHERE id = $4 AND status = 'open'",
            )
            .bind(&at)
            .bind(&by.staff_id)
            .bind(note)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM assignments WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                return match status {
                    None => Err(StoreError::NotFound(id)),
                    Some(s) => Ok(Completion::NotOpen(Status::parse(&s).ok_or(
                        StoreError::Corrupt {
                            column: "status",
                            value: s,
                        },
                    )?)),
                };
            }
            record(
                &mut tx,
                id,
                "completed",
                by,
                &at,
                note.map(|_| "with note").unwrap_or(""),
            )
            .await?;
            if let Some((new, effects)) = completed_with {
                records::insert(&mut tx, id, new, by, &at).await?;
                actions::insert_actions(&mut tx, &effects.actions, by, &at).await?;
                concerns::insert_concerns(&mut tx, &effects.concerns, by, &at).await?;
            }
            outbox::cancel_for_assignment(&mut tx, id, "assignment completed").await?;
            let created = tx
                .insert_assignments(triggered, (false, None), by, &at)
                .await?;
            let pairs: Vec<(i64, &NewAssignment)> =
                created.iter().map(|&(id, i)| (id, &triggered[i])).collect();
            outbox::insert(&mut tx, &notices(&pairs), &at).await?;
            tx.commit().await?;
            Ok(Completion::Completed {
                triggered: created.into_iter().map(|(id, _)| id).collect(),
            })
        })
    }

    /// Moves an open assignment to someone else.
    pub async fn reassign(
        &self,
        id: i64,
        to: &str,
        by: &Actor,
        notices: &[NewOutbox],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let from: Option<String> = sqlx::query_scalar(
                "SELECT assignee FROM assignments WHERE id = $1 AND status = 'open'",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(from) = from else {
                tx.rollback().await?;
                return Ok(false);
            };
            // Guarded by what was read: a concurrent change (another reassignment, a
            // completion) makes this match nothing, and the caller is told it is not open.
            let updated = sqlx::query(
                "UPDATE assignments SET assignee = $1 WHERE id = $2 AND status = 'open' \
                 AND assignee = $3",
            )
            .bind(to)
            .bind(id)
            .bind(&from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            record(
                &mut tx,
                id,
                "reassigned",
                by,
                &at,
                &format!("from {from} to {to}"),
            )
            .await?;
            outbox::cancel_for_assignment(&mut tx, id, "assignment reassigned").await?;
            outbox::insert(&mut tx, notices, &at).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Withdraws an open assignment.
    pub async fn cancel(
        &self,
        id: i64,
        by: &Actor,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE assignments SET status = 'cancelled' WHERE id = $1 AND status = 'open'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            record(&mut tx, id, "cancelled", by, &at, reason).await?;
            outbox::cancel_for_assignment(&mut tx, id, "assignment cancelled").await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// An assignment's history, oldest first.
    pub async fn history(&self, id: i64) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows: Vec<(i64, String, String, String, String, Option<String>)> =
            on_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT assignment_id, event, actor, at, detail, via FROM assignment_history \
                 WHERE assignment_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(pool)
                .await?
            });
        rows.into_iter()
            .map(|(assignment_id, event, actor, at, detail, via)| {
                // Rows from before `via` was recorded: qaloop's own changes say so in the
                // actor, and the CLI was the only other edge.
                let via = match via.as_deref().map(Via::parse) {
                    Some(Some(via)) => via,
                    Some(None) => {
                        return Err(StoreError::Corrupt {
                            column: "via",
                            value: via.unwrap_or_default(),
                        });
                    }
                    None if actor.starts_with("system:") => Via::System,
                    None => Via::Cli,
                };
                Ok(HistoryEntry {
                    assignment_id,
                    event,
                    via,
                    actor,
                    at: instant("at", &at)?,
                    detail,
                })
            })
            .collect()
    }

    /// Counts of assignments and history rows, for reports and tests.
    pub async fn counts(&self) -> Result<(i64, i64), StoreError> {
        Ok(on_pool!(self, |pool| {
            let a: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assignments")
                .fetch_one(pool)
                .await?;
            let h: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assignment_history")
                .fetch_one(pool)
                .await?;
            (a, h)
        }))
    }
}

/// Appends one history row.
async fn record<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    id: i64,
    event: &str,
    actor: &Actor,
    at: &str,
    detail: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO assignment_history (assignment_id, event, actor, at, detail, via) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(event.to_owned())
    .bind(actor.staff_id.clone())
    .bind(at.to_owned())
    .bind(detail.to_owned())
    .bind(actor.via.as_str().to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts assignments that do not exist yet (unique key: activity, period, slot, subject) in
/// chunks, and a `created` history row for each one inserted, inside the caller's transaction.
/// Returns each new row's id and its index in `rows`, in id order (the caller queues the
/// notifications about them in the same transaction).
///
/// The one operation with a statement shape per backend, because it is the hot path of
/// reconcile (7,000 rows for one period at national size; see `BENCHMARKS.md`). Both insert a
/// chunk with one multi-row `INSERT … ON CONFLICT DO NOTHING` and write its history with one
/// `INSERT … SELECT` that finds the new rows in the database, instead of returning every new
/// row to qaloop and sending a history row back for it:
/// - PostgreSQL: one statement per chunk; the history insert reads what the assignment insert
///   `RETURNING`s, through a data-modifying `WITH`.
/// - SQLite (no `INSERT` inside `WITH`): the caller's write transaction holds SQLite's only
///   write lock and `AUTOINCREMENT` ids only grow, so the rows a chunk inserted are exactly those
///   with an id above the largest before it.
trait InsertAssignments {
    async fn insert_assignments(
        &mut self,
        rows: &[NewAssignment],
        how: Creation,
        actor: &Actor,
        at: &str,
    ) -> Result<Vec<(i64, usize)>, sqlx::Error>;
}

/// Matches rows the database returns (id, activity, slot, subject) to the planned rows they came
/// from: within one call the three identify a row (one period, one unique key each).
fn match_planned(
    rows: &[NewAssignment],
    inserted: Vec<(i64, String, String, String)>,
) -> Vec<(i64, usize)> {
    let index: std::collections::HashMap<(&str, &str, &str), usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                (
                    r.activity_id.as_str(),
                    r.slot.as_str(),
                    r.subject.as_deref().unwrap_or(""),
                ),
                i,
            )
        })
        .collect();
    inserted
        .into_iter()
        .filter_map(|(id, activity, slot, subject)| {
            index
                .get(&(activity.as_str(), slot.as_str(), subject.as_str()))
                .map(|&i| (id, i))
        })
        .collect()
}

impl InsertAssignments for Transaction<'_, sqlx::Sqlite> {
    async fn insert_assignments(
        &mut self,
        rows: &[NewAssignment],
        how: Creation,
        actor: &Actor,
        at: &str,
    ) -> Result<Vec<(i64, usize)>, sqlx::Error> {
        let largest = "SELECT COALESCE(MAX(id), 0) FROM assignments";
        let first: i64 = sqlx::query_scalar(largest).fetch_one(&mut **self).await?;
        let mut before = first;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::new("");
            push_insert(&mut qb, chunk, how, at);
            if qb.build().execute(&mut **self).await?.rows_affected() == 0 {
                continue;
            }
            let mut hq = QueryBuilder::new("");
            push_history_select(&mut hq, chunk, actor, at, "assignments");
            hq.push(" WHERE a.id > ")
                .push_bind(before)
                .push(" ORDER BY a.id");
            hq.build().execute(&mut **self).await?;
            before = sqlx::query_scalar(largest).fetch_one(&mut **self).await?;
        }
        let inserted = sqlx::query_as(
            "SELECT id, activity_id, slot, subject FROM assignments WHERE id > $1 ORDER BY id",
        )
        .bind(first)
        .fetch_all(&mut **self)
        .await?;
        Ok(match_planned(rows, inserted))
    }
}

impl InsertAssignments for Transaction<'_, sqlx::Postgres> {
    /// One statement per [`UNNEST_CHUNK`] rows: the columns go as arrays, so the statement's
    /// text is the same whatever the count, prepared once per connection and planned in
    /// microseconds. A `VALUES` list of a thousand rows (13,000 parameters) was a new
    /// statement for every chunk size, parsed and planned each time, and its parameters
    /// travelled one by one: the largest cost of a national morning's reconcile.
    async fn insert_assignments(
        &mut self,
        rows: &[NewAssignment],
        (created_late, go_live): Creation,
        actor: &Actor,
        at: &str,
    ) -> Result<Vec<(i64, usize)>, sqlx::Error> {
        let mut ids = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(UNNEST_CHUNK) {
            let column = |f: fn(&NewAssignment) -> String| chunk.iter().map(f).collect::<Vec<_>>();
            let inserted = sqlx::query_as(INSERT_ASSIGNMENTS_UNNEST)
                .bind(column(|r| r.activity_id.clone()))
                .bind(column(|r| r.period_label.clone()))
                .bind(column(|r| r.period_start.to_string()))
                .bind(column(|r| r.period_end.to_string()))
                .bind(column(|r| r.slot.clone()))
                .bind(column(|r| r.assignee.to_string()))
                .bind(column(|r| r.subject.clone().unwrap_or_default()))
                .bind(chunk.iter().map(|r| r.trigger_id).collect::<Vec<_>>())
                .bind(column(|r| r.due.to_string()))
                .bind(
                    chunk
                        .iter()
                        .map(|r| go_live.is_some_and(|day| r.due < day))
                        .collect::<Vec<_>>(),
                )
                .bind(chunk.iter().map(|r| r.note.clone()).collect::<Vec<_>>())
                .bind(at)
                .bind(created_late)
                .bind(actor.staff_id.as_str())
                .bind(actor.via.as_str())
                .fetch_all(&mut **self)
                .await?;
            ids.extend(match_planned(rows, inserted));
        }
        Ok(ids)
    }
}

/// Rows per statement of [`INSERT_ASSIGNMENTS_UNNEST`]: arrays have no parameter limit, so
/// this only bounds one statement's memory.
const UNNEST_CHUNK: usize = 10_000;

/// PostgreSQL's insert of planned assignments, their `created` history rows in the same
/// statement (a leaver's work carries its note), in the planned order; returns the rows it
/// inserted (the others existed already).
const INSERT_ASSIGNMENTS_UNNEST: &str = "\
    WITH input AS ( \
      SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
        $6::text[], $7::text[], $8::bigint[], $9::text[], $10::boolean[], $11::text[]) \
        WITH ORDINALITY AS t(activity_id, period_label, period_start, period_end, slot, \
        assignee, subject, trigger_id, due, before_go_live, note, position)), \
    new AS ( \
      INSERT INTO assignments (activity_id, period_label, period_start, period_end, slot, \
        assignee, subject, trigger_id, due, status, created_at, created_late, before_go_live) \
      SELECT activity_id, period_label, period_start, period_end, slot, assignee, subject, \
        trigger_id, due, 'open', $12, $13, before_go_live FROM input ORDER BY position \
      ON CONFLICT (activity_id, period_start, slot, subject) DO NOTHING \
      RETURNING id, activity_id, period_start, slot, subject), \
    history AS ( \
      INSERT INTO assignment_history (assignment_id, event, actor, at, via, detail) \
      SELECT a.id, 'created', $14, $12, $15, COALESCE(n.note, '') FROM new a \
      LEFT JOIN (SELECT * FROM input WHERE note IS NOT NULL) n \
        ON n.activity_id = a.activity_id AND n.period_start = a.period_start \
        AND n.slot = a.slot AND n.subject = a.subject \
      ORDER BY a.id) \
    SELECT id, activity_id, slot, subject FROM new ORDER BY id";

/// How rows are created: (after their period began because qaloop was down; the go-live date
/// when this is a new database's first pass, before which due rows are `before_go_live`).
type Creation = (bool, Option<Date>);

/// `INSERT INTO assignments (…) VALUES (…), … ON CONFLICT (unique key) DO NOTHING` for `chunk`
/// (SQLite's insert; PostgreSQL's passes arrays instead: [`INSERT_ASSIGNMENTS_UNNEST`]).
fn push_insert<DB>(
    qb: &mut QueryBuilder<DB>,
    chunk: &[NewAssignment],
    (created_late, go_live): Creation,
    at: &str,
) where
    DB: sqlx::Database,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(
        "INSERT INTO assignments (activity_id, period_label, period_start, period_end, slot, \
         assignee, subject, trigger_id, due, status, created_at, created_late, before_go_live) ",
    );
    qb.push_values(chunk, |mut b, r| {
        b.push_bind(r.activity_id.as_str())
            .push_bind(r.period_label.as_str())
            .push_bind(r.period_start.to_string())
            .push_bind(r.period_end.to_string())
            .push_bind(r.slot.as_str())
            .push_bind(r.assignee.to_string())
            .push_bind(r.subject.as_deref().unwrap_or(""))
            .push_bind(r.trigger_id)
            .push_bind(r.due.to_string())
            .push_bind("open")
            .push_bind(at)
            .push_bind(created_late)
            .push_bind(go_live.is_some_and(|day| r.due < day));
    });
    qb.push(" ON CONFLICT (activity_id, period_start, slot, subject) DO NOTHING");
}

/// `INSERT INTO assignment_history (…) SELECT a.id, 'created', actor, at, note FROM source a`,
/// where `source` holds the new assignments and `note` is the planned row's note (a leaver's
/// work says why it went to someone else), matched on the unique key through a `VALUES` list
/// (whose columns are named `column1`…); the caller adds the `WHERE`/`ORDER BY`. Only
/// rows with a note are sent again, and usually there are none.
fn push_history_select<DB>(
    qb: &mut QueryBuilder<DB>,
    rows: &[NewAssignment],
    actor: &Actor,
    at: &str,
    source: &str,
) where
    DB: sqlx::Database,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(
        "INSERT INTO assignment_history (assignment_id, event, actor, at, via, detail) \
         SELECT a.id, 'created', ",
    );
    qb.push_bind(actor.staff_id.as_str())
        .push(", ")
        .push_bind(at)
        .push(", ")
        .push_bind(actor.via.as_str())
        .push(", ");
    let noted: Vec<&NewAssignment> = rows.iter().filter(|r| r.note.is_some()).collect();
    if noted.is_empty() {
        qb.push("'' FROM ").push(source).push(" a");
        return;
    }
    qb.push("COALESCE(n.column5, '') FROM ")
        .push(source)
        .push(" a LEFT JOIN (");
    qb.push_values(noted, |mut b, r| {
        b.push_bind(r.activity_id.as_str())
            .push_bind(r.period_start.to_string())
            .push_bind(r.slot.as_str())
            .push_bind(r.subject.as_deref().unwrap_or(""))
            .push_bind(r.note.as_deref().unwrap_or(""));
    });
    qb.push(
        ") AS n ON n.column1 = a.activity_id AND n.column2 = a.period_start \
         AND n.column3 = a.slot AND n.column4 = a.subject",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_the_unwritable_mark_are_retired_and_later_ones_kept() {
        let mark = UnwritableMark::default();
        let start = std::time::Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        // No mark yet: nothing is retired, however old.
        assert!(!mark.predates_at(later(1000), Duration::from_millis(1000)));
        mark.set_at(later(100));
        // Now is 130 ms: a connection opened at 0 or at 100 ms predates the mark; one opened at
        // 120 or 130 ms (after the outage was seen) is kept.
        assert!(mark.predates_at(later(130), Duration::from_millis(130)));
        assert!(mark.predates_at(later(130), Duration::from_millis(30)));
        assert!(!mark.predates_at(later(130), Duration::from_millis(10)));
        assert!(!mark.predates_at(later(130), Duration::ZERO));
        // Older than the process's clock can tell: retired.
        assert!(mark.predates_at(later(130), Duration::from_secs(u64::MAX / 4)));
    }
}
