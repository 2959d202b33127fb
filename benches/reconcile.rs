//! A year of daily reconcile ticks at council and national size, on SQLite and PostgreSQL.
//!
//! `cargo bench --bench reconcile` (or `scripts/bench.sh`) runs four scenarios — {council,
//! national} × {sqlite, postgres} — each in a fresh child process, so the peak memory reported is
//! that scenario's alone. A scenario:
//!
//! 1. builds a deterministic synthetic organisation (`support/org.rs`, [`org::synthetic_org`]);
//! 2. on a fresh database, imports it once, then runs `engine::reconcile` at 07:30 Europe/London
//!    every day from 2027-04-01 to 2028-03-31 (365 ticks) with the shipped
//!    `config/schedule.toml` and `config/bank-holidays.json`, timing the import and the whole
//!    year, then times five no-op ticks (reconcile again at the last moment);
//! 3. reads the peak resident set (`VmHWM`) of the process;
//! 4. times the floor: the same rows (from `engine::plan::plan_window`, checked to be as many as
//!    reconcile created) inserted into a fresh database with plain sqlx multi-row INSERTs in one
//!    transaction. For context it also times a like-for-like floor that writes the `created`
//!    history rows too, with one `INSERT … SELECT` in the same transaction: qaloop writes two
//!    rows per assignment, the floor one.
//!
//! Steps 2 and 4 are each taken [`SAMPLES`] times and the best kept (the machine this runs on
//! is shared, and interference only adds time); the no-op figure is the median of all ticks.
//!
//! The parent prints one table and a PASS/MISS line per target. PostgreSQL comes from
//! `QALOOP_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each database is a
//! fresh schema, dropped afterwards. When PostgreSQL cannot be reached its scenarios are skipped
//! with a notice. Extra arguments filter scenarios by name: `cargo bench --bench reconcile --
//! council` runs only `council-sqlite` and `council-postgres`.

// The daemon's allocator (src/main.rs), so these figures are its figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/org.rs"]
mod org;

use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use jiff::civil::{Date, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use qaloop::calendar::Calendar;
use qaloop::domain::NewAssignment;
use qaloop::engine::plan::plan_window;
use qaloop::engine::{Context, import_staff, reconcile};
use qaloop::org::{Org, Person};
use qaloop::schedule::{FinancialYear, Schedule};
use qaloop::store::{Store, format_instant};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, QueryBuilder};

/// The child process reads its scenario from here; the parent never sets it for itself.
const SCENARIO_ENV: &str = "QALOOP_BENCH_SCENARIO";
/// Where PostgreSQL is; the default is the development server the tests use.
const PG_URL_ENV: &str = "QALOOP_BENCH_PG_URL";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const SCHEDULE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/schedule.toml");
const HOLIDAYS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/bank-holidays.json");

/// The benchmarked year: the 2027-28 financial year.
const FIRST_DAY: Date = date(2027, 4, 1);
const LAST_DAY: Date = date(2028, 3, 31);
/// Rows per INSERT in the floor: the same chunk the store uses, well under bind limits.
const FLOOR_CHUNK: usize = 1000;
/// Pool size: the daemon's default `database.max_connections`.
const POOL_SIZE: u32 = 5;
/// How many times each measurement (year, import, floor) is taken, each on a fresh database;
/// the best is reported, since on a shared machine interference only ever adds time.
const SAMPLES: usize = 3;
/// How many no-op ticks to take after each year; the median of all of them is reported.
const NOOP_SAMPLES: usize = 5;

/// The targets.
const NOOP_TARGET: Duration = Duration::from_millis(50);
const RATIO_TARGET: f64 = 0.5;

/// An organisation size.
#[derive(Debug, Clone, Copy)]
struct Size {
    /// `council` or `national`.
    name: &'static str,
    /// Everyone in the staff file.
    staff: usize,
    /// How many of them are team managers: the role that creates most of the work.
    team_managers: usize,
    /// The whole year must take less than this.
    year_target: Duration,
}

const COUNCIL: Size = Size {
    name: "council",
    staff: 150,
    team_managers: 40,
    year_target: Duration::from_secs(1),
};
const NATIONAL: Size = Size {
    name: "national",
    staff: 10_000,
    team_managers: 7_000,
    year_target: Duration::from_secs(10),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// One (size, backend) pair; run in its own process.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    size: Size,
    backend: Backend,
}

impl Scenario {
    fn all() -> Vec<Scenario> {
        [COUNCIL, NATIONAL]
            .into_iter()
            .flat_map(|size| {
                [Backend::Sqlite, Backend::Postgres].map(|backend| Scenario { size, backend })
            })
            .collect()
    }

    fn id(self) -> String {
        format!("{}-{}", self.size.name, self.backend.name())
    }

    fn find(id: &str) -> Option<Scenario> {
        Self::all().into_iter().find(|s| s.id() == id)
    }
}

/// What a child reports to the parent, as one JSON line on stdout.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    /// `council-sqlite`, …
    scenario: String,
    /// People in the synthetic organisation.
    staff: usize,
    /// Assignments a year of reconcile created.
    assignments: usize,
    /// The one `import_staff`, best run.
    import_s: f64,
    /// The 365 ticks, best run.
    year_s: f64,
    /// A tick with nothing to do, median.
    noop_ms: f64,
    /// `VmHWM` after the years, before the floors.
    peak_mib: f64,
    /// Rows the floors insert (the same as `assignments`, checked).
    floor_rows: usize,
    /// The floor, best run.
    floor_s: f64,
    /// The floor plus the history rows, best run.
    floor_history_s: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.assignments as f64 / self.year_s
    }
    fn floor_rate(&self) -> f64 {
        self.floor_rows as f64 / self.floor_s
    }
    fn ratio(&self) -> f64 {
        self.rate() / self.floor_rate()
    }
    fn ratio_with_history(&self) -> f64 {
        self.floor_history_s / self.year_s
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    if let Ok(id) = std::env::var(SCENARIO_ENV) {
        return child(&id);
    }
    parent()
}

// ---- the parent: spawn, collect, report ---------------------------------------------------

fn parent() -> ExitCode {
    // `cargo bench` passes `--bench`; anything else not starting with `-` filters scenarios.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.id().contains(f.as_str())))
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "- {cores} cores; load average before the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let pg_url = pg_url();
    match sqlite_version() {
        Ok(version) => println!("- SQLite {version} (bundled)"),
        Err(e) => println!("- SQLite version unknown: {e}"),
    }
    let pg_up = if wanted.iter().any(|s| s.backend == Backend::Postgres) {
        match postgres_version(&pg_url) {
            Ok(version) => {
                println!("- PostgreSQL {version} at {pg_url}");
                true
            }
            Err(e) => {
                println!(
                    "- NOTICE: PostgreSQL at {pg_url} is unreachable ({e}); skipping the postgres \
                     scenarios. Set {PG_URL_ENV} to point elsewhere."
                );
                false
            }
        }
    } else {
        false
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find the benchmark executable: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut results: Vec<(Scenario, Outcome)> = Vec::new();
    let mut failed = false;
    for scenario in wanted {
        if scenario.backend == Backend::Postgres && !pg_up {
            continue;
        }
        eprintln!("running {} …", scenario.id());
        let output = Command::new(&exe)
            .env(SCENARIO_ENV, scenario.id())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output();
        let parsed = output.map_err(BoxError::from).and_then(|out| {
            if !out.status.success() {
                return Err(format!("child exited with {}", out.status).into());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let last = text.lines().last().unwrap_or_default();
            serde_json::from_str::<Outcome>(last).map_err(BoxError::from)
        });
        match parsed {
            Ok(outcome) => results.push((scenario, outcome)),
            Err(e) => {
                eprintln!("{} failed: {e}", scenario.id());
                failed = true;
            }
        }
    }
    print_report(&results);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn pg_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// The version of the SQLite qaloop links.
fn sqlite_version() -> Result<String, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await?;
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(version)
    })
}

/// The server's version, or why it cannot be reached.
fn postgres_version(url: &str) -> Result<String, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let options = PgConnectOptions::from_str(url)?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect_with(&options),
        )
        .await
        .map_err(|_| "timed out after 5 s")??;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(version)
    })
}

fn print_report(results: &[(Scenario, Outcome)]) {
    println!();
    println!(
        "| scenario | backend | staff | assignments | import s | year s | assignments/s | floor rows/s | ratio | no-op tick ms | peak MiB | ratio to floor + history |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (s, o) in results {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} |",
            s.size.name,
            s.backend.name(),
            o.staff,
            o.assignments,
            o.import_s,
            o.year_s,
            o.rate(),
            o.floor_rate(),
            o.ratio(),
            o.noop_ms,
            o.peak_mib,
            o.ratio_with_history(),
        );
    }
    println!();
    println!("| target | scenario | measured | result |");
    println!("|---|---|--:|---|");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    for (s, o) in results {
        let target = s.size.year_target.as_secs_f64();
        println!(
            "| {} year < {target} s | {} | {:.3} s | {} |",
            s.size.name,
            s.id(),
            o.year_s,
            verdict(o.year_s < target),
        );
        if s.size.name == NATIONAL.name {
            println!(
                "| no-op tick < {} ms | {} | {:.2} ms | {} |",
                NOOP_TARGET.as_millis(),
                s.id(),
                o.noop_ms,
                verdict(o.noop_ms < NOOP_TARGET.as_secs_f64() * 1000.0),
            );
        }
        println!(
            "| ratio to floor ≥ {RATIO_TARGET} | {} | {:.2} | {} |",
            s.id(),
            o.ratio(),
            verdict(o.ratio() >= RATIO_TARGET),
        );
    }
}

// ---- the child: one scenario --------------------------------------------------------------

fn child(id: &str) -> ExitCode {
    let Some(scenario) = Scenario::find(id) else {
        eprintln!("unknown scenario {id}");
        return ExitCode::FAILURE;
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BoxError::from)
        .and_then(|rt| rt.block_on(run(scenario)));
    match result {
        Ok(outcome) => match serde_json::to_string(&outcome) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{id}: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{id}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh, migrated database for one measurement, and how to get rid of it.
struct FreshDb {
    store: Store,
    /// Where a plain sqlx pool connects to reach the same database (the floor uses it).
    target: DbTarget,
}

enum DbTarget {
    Sqlite(SqliteConnectOptions),
    Postgres {
        options: PgConnectOptions,
        schema: String,
    },
}

impl FreshDb {
    async fn create(
        backend: Backend,
        label: &str,
        dir: &std::path::Path,
    ) -> Result<FreshDb, BoxError> {
        match backend {
            Backend::Sqlite => {
                let path = dir.join(format!("{label}.db"));
                let store =
                    Store::connect(&format!("sqlite://{}", path.display()), POOL_SIZE).await?;
                store.migrate().await?;
                // The same pragmas `Store::connect` sets, so the floor pays what qaloop pays.
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true);
                Ok(FreshDb {
                    store,
                    target: DbTarget::Sqlite(options),
                })
            }
            Backend::Postgres => {
                let base = PgConnectOptions::from_str(&pg_url())?;
                let schema = format!("qaloop_bench_{}_{label}", std::process::id());
                let mut admin = sqlx::PgConnection::connect_with(&base).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await?;
                let options = base.options([("search_path", schema.as_str())]);
                let store = Store::connect_postgres(options.clone(), POOL_SIZE).await?;
                store.migrate().await?;
                Ok(FreshDb {
                    store,
                    target: DbTarget::Postgres { options, schema },
                })
            }
        }
    }

    async fn drop_db(self) -> Result<(), BoxError> {
        self.store.close().await;
        if let DbTarget::Postgres { schema, .. } = &self.target {
            let base = PgConnectOptions::from_str(&pg_url())?;
            let mut admin = sqlx::PgConnection::connect_with(&base).await?;
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await?;
            admin.close().await?;
        }
        Ok(())
    }
}

async fn run(scenario: Scenario) -> Result<Outcome, BoxError> {
    let ctx = context()?;
    let tz = ctx.tz.clone();
    let tick = |day: Date| -> Result<Timestamp, jiff::Error> {
        Ok(day.at(7, 30, 0, 0).to_zoned(tz.clone())?.timestamp())
    };
    let records = org::synthetic_org(
        scenario.size.staff,
        scenario.size.team_managers,
        &ctx.schedule,
    );
    let dir = tempfile::tempdir()?;

    // qaloop, best of SAMPLES runs: import once, then a year of daily ticks, on a fresh database.
    let first = tick(FIRST_DAY)?;
    let last = tick(LAST_DAY)?;
    let mut imports = Vec::with_capacity(SAMPLES);
    let mut years = Vec::with_capacity(SAMPLES);
    let mut noops = Vec::with_capacity(SAMPLES * NOOP_SAMPLES);
    let mut created = 0;
    for n in 0..SAMPLES {
        let db = FreshDb::create(scenario.backend, &format!("qaloop{n}"), dir.path()).await?;
        let started = Instant::now();
        import_staff(&db.store, &ctx, &records, "bench", FIRST_DAY, first).await?;
        imports.push(started.elapsed());

        created = 0;
        let started = Instant::now();
        let mut day = FIRST_DAY;
        while day <= LAST_DAY {
            created += reconcile(&db.store, &ctx, tick(day)?).await?.created;
            day = day.checked_add(1.day())?;
        }
        years.push(started.elapsed());

        for _ in 0..NOOP_SAMPLES {
            let started = Instant::now();
            let report = reconcile(&db.store, &ctx, last).await?;
            noops.push(started.elapsed());
            if report.created != 0 {
                return Err(format!("a repeat tick created {} assignments", report.created).into());
            }
        }

        let (assignments, history) = db.store.counts().await?;
        if assignments as usize != created || history as usize != created {
            return Err(format!(
                "reconcile reported {created} created; the store holds {assignments} \
                 assignments and {history} history rows"
            )
            .into());
        }
        db.drop_db().await?;
    }
    let peak_mib = peak_rss_mib()?;

    // The floor: the same rows, plain sqlx, one transaction, into a fresh database.
    let org = Org::new(records.into_iter().map(|record| Person {
        record,
        active_from: None,
        left_on: None,
    }));
    let rows = plan_window(&ctx, &org, FIRST_DAY, LAST_DAY);
    if rows.len() != created {
        return Err(format!(
            "plan_window wants {} rows but reconcile created {created}",
            rows.len()
        )
        .into());
    }
    let at = format_instant(first);
    let mut floors = Vec::with_capacity(SAMPLES);
    let mut floors_history = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let label = format!("floor{n}");
        floors.push(
            time_floor(
                scenario.backend,
                &label,
                dir.path(),
                &rows,
                &at,
                History::Without,
            )
            .await?,
        );
        let label = format!("floor{n}_history");
        floors_history.push(
            time_floor(
                scenario.backend,
                &label,
                dir.path(),
                &rows,
                &at,
                History::With,
            )
            .await?,
        );
    }
    let floor = best(floors);
    let floor_history = best(floors_history);

    Ok(Outcome {
        scenario: scenario.id(),
        staff: scenario.size.staff,
        assignments: created,
        import_s: best(imports).as_secs_f64(),
        year_s: best(years).as_secs_f64(),
        noop_ms: median(noops).as_secs_f64() * 1000.0,
        peak_mib,
        floor_rows: rows.len(),
        floor_s: floor.as_secs_f64(),
        floor_history_s: floor_history.as_secs_f64(),
    })
}

/// Whether a floor also writes the `created` history rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    Without,
    With,
}

/// Times inserting `rows` into a fresh database named `label` with plain sqlx.
async fn time_floor(
    backend: Backend,
    label: &str,
    dir: &std::path::Path,
    rows: &[NewAssignment],
    at: &str,
    history: History,
) -> Result<Duration, BoxError> {
    let db = FreshDb::create(backend, label, dir).await?;
    db.store.close().await;
    let took = match &db.target {
        DbTarget::Sqlite(options) => {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            let took = insert_floor(&pool, rows, at, history).await?;
            pool.close().await;
            took
        }
        DbTarget::Postgres { options, .. } => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            let took = insert_floor(&pool, rows, at, history).await?;
            pool.close().await;
            took
        }
    };
    db.drop_db().await?;
    Ok(took)
}

/// The shipped schedule and bank holidays, in Europe/London, from the benchmarked year's start.
fn context() -> Result<Context, BoxError> {
    let text = std::fs::read_to_string(SCHEDULE_FILE)?;
    let schedule = Schedule::parse(&text, std::path::Path::new(SCHEDULE_FILE))?;
    let calendar = Calendar::from_govuk_json(
        &std::fs::read_to_string(HOLIDAYS_FILE)?,
        "england-and-wales",
    )?;
    Ok(Context {
        announcer: None,
        schedule,
        calendar,
        tz: TimeZone::get("Europe/London")?,
        fy: FinancialYear::starting_in(4).ok_or("financial year")?,
        start_date: Some(FIRST_DAY),
    })
}

/// Inserts `rows` with plain multi-row INSERTs in one transaction (and, `With` history, one
/// `INSERT … SELECT` of their history rows); returns how long that took, from `BEGIN` to
/// `COMMIT` (the rows are built before the clock starts).
async fn insert_floor<DB>(
    pool: &sqlx::Pool<DB>,
    rows: &[NewAssignment],
    at: &str,
    history: History,
) -> Result<Duration, sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    for chunk in rows.chunks(FLOOR_CHUNK) {
        let mut qb: QueryBuilder<DB> = QueryBuilder::new(
            "INSERT INTO assignments (activity_id, period_label, period_start, period_end, slot, \
             assignee, subject, trigger_id, due, status, created_at, created_late) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(r.activity_id.clone())
                .push_bind(r.period_label.clone())
                .push_bind(r.period_start.to_string())
                .push_bind(r.period_end.to_string())
                .push_bind(r.slot.clone())
                .push_bind(r.assignee.to_string())
                .push_bind(r.subject.clone().unwrap_or_default())
                .push_bind(r.trigger_id)
                .push_bind(r.due.to_string())
                .push_bind("open".to_owned())
                .push_bind(at.to_owned())
                .push_bind(false);
        });
        qb.build().execute(&mut *tx).await?;
    }
    if history == History::With {
        sqlx::query(
            "INSERT INTO assignment_history (assignment_id, event, actor, at, detail) \
             SELECT id, 'created', $1, $2, '' FROM assignments",
        )
        .bind("system:reconcile".to_owned())
        .bind(at.to_owned())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(started.elapsed())
}

/// The fastest sample: on a shared machine, interference only ever adds time.
fn best(samples: Vec<Duration>) -> Duration {
    samples.into_iter().min().unwrap_or_default()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The process's peak resident set size (`VmHWM`), in MiB.
fn peak_rss_mib() -> Result<f64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}
