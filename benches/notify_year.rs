//! A national-size year with notifications on: reconcile, the daily decision and dispatch to a
//! loopback SMTP sink, every day of a financial year, on SQLite and PostgreSQL.
//!
//! `cargo bench --locked --bench notify_year` (or `scripts/bench-notify.sh`). Each backend runs
//! in a child process of its own (this binary, re-executed with [`SCENARIO_ENV`] set), so the
//! peak memory is that backend's year alone. A child:
//!
//! 1. builds the synthetic organisation of `benches/support/org.rs` (national: 10,000 staff,
//!    7,000 team managers) and the engine context with notifications on: the shipped schedule
//!    and bank holidays, `[notify]` defaults (working hours 08:00–18:00, everyone on the daily
//!    message), signed links, one email channel (`connections`: see below) to a loopback SMTP
//!    sink started by the child;
//! 2. imports the staff once on a fresh database (a SQLite file; a PostgreSQL schema of its
//!    own, dropped afterwards);
//! 3. every day from 2027-04-01 to 2028-03-31, with the time injected, runs the daemon's two
//!    morning passes — 07:30 (`daily_at`: reconcile, the daily decision, dispatch, which holds
//!    routine mail until working hours) and 08:00 (the hourly pass that sends it) — each being
//!    `reconcile` + `notify::daily::decide` + `Dispatcher::dispatch`, as `pass::run_pass` runs
//!    them, and times the two together as the day's full pass;
//! 4. at 14:00 the staff do their work (not timed; written straight to the database in one
//!    transaction a day, the same three writes a completion makes: the assignment, its
//!    `completed` history row, its unsent notices cancelled — no triggered moderations): most
//!    people complete each piece of work up to nine days before its due date; every 20th team
//!    manager completes 15 days late, and every 100th (from the 7th) never does, so chases and
//!    escalations happen every day;
//! 5. counts what the sink received per recipient, kind and day (the kind is the first part of
//!    the `Message-ID`, which the outbox key starts with).
//!
//! It prints the time per working day's pass (mean, p99, max; and the two passes' means), the
//! outbox rows of the year by status, routine messages per person per working day (every kind
//! but the senior-leadership digest; max and p99 over the person-days with any message), and
//! the peak resident set (`VmHWM`). Settings, all optional:
//! - `QALOOP_BENCH_TEAM_MANAGERS` (default 7000) and `QALOOP_BENCH_STAFF` (default 10000);
//! - `QALOOP_BENCH_DAYS`: simulate only the first this many days (default: the whole year);
//! - `QALOOP_BENCH_FROM`: the first day (`YYYY-MM-DD`, default 2027-04-01; it is also go-live):
//!   with `QALOOP_BENCH_DAYS`, a short window around a period start, e.g. `2027-09-20` and 20
//!   days for 1 October (the quarter and half-year start);
//! - `QALOOP_BENCH_CONNECTIONS` (default 4): the email channel's `connections`, messages
//!   sent at once (1: one at a time, the channel's default);
//! - `QALOOP_BENCH_CURRENT_THREAD=1`: run the passes on a current-thread runtime, as `serve`
//!   did before it was given two worker threads (default: multi-threaded, a worker per core, as
//!   `tick` runs; on a 2-core machine that is also `serve`'s two workers);
//! - `QALOOP_BENCH_PER_DAY=1`: also print each working day's two passes to stderr, each split
//!   into reconcile, decide and dispatch (with the messages sent);
//! - `QALOOP_BENCH_PG_NOTES=database`: on PostgreSQL, record each delivery in the database at
//!   once (no `notify.sent_journal`) instead of noting it in a sent journal file;
//! - `QALOOP_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`); when it does not
//!   answer, PostgreSQL is skipped with a notice;
//! - arguments filter backends by name: `cargo bench --bench notify_year -- sqlite`.

// The daemon's allocator (src/main.rs), so these figures are its figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/org.rs"]
mod org;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::civil::{Date, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use qaloop::calendar::Calendar;
use qaloop::domain::Status;
use qaloop::engine::{Context, import_staff, reconcile};
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::router::Router;
use qaloop::notify::settings::NotifyConfig;
use qaloop::notify::templates::Templates;
use qaloop::notify::{Channel, ChannelSettings};
use qaloop::schedule::{FinancialYear, Schedule};
use qaloop::store::{AssignmentFilter, Store, format_instant};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{AssertSqlSafe, Connection, QueryBuilder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SCENARIO_ENV: &str = "QALOOP_NOTIFY_BENCH_SCENARIO";
const PG_URL_ENV: &str = "QALOOP_BENCH_PG_URL";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const SCHEDULE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/schedule.toml");
const HOLIDAYS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/bank-holidays.json");
/// The default first day (`QALOOP_BENCH_FROM`).
const FIRST_DAY: Date = date(2027, 4, 1);
const LAST_DAY: Date = date(2028, 3, 31);
/// The daemon's default `database.max_connections`.
const POOL_SIZE: u32 = 5;
/// The target for a working day's full pass.
const PASS_TARGET: Duration = Duration::from_secs(2);
/// Kinds that are not routine: they come on their own, whatever else a person gets that day.
const NOT_ROUTINE: [&str; 3] = ["slt_digest", "admin_alert", "urgent_concern"];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a child reports, as one JSON line on stdout.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    backend: String,
    staff: usize,
    team_managers: usize,
    days: usize,
    /// The first day simulated.
    first_day: String,
    /// The email channel's `connections`.
    connections: usize,
    working_days: usize,
    /// The 07:30 + 08:00 passes of each working day, seconds, in day order.
    working_pass_s: Vec<f64>,
    /// The 07:30 and 08:00 passes alone, mean over working days.
    early_mean_s: f64,
    send_mean_s: f64,
    /// The two passes of a day that is not a working day, mean.
    idle_mean_s: f64,
    /// The slowest working day and its pass.
    slowest_day: String,
    /// Assignments at the end of the year.
    assignments: i64,
    /// Outbox rows at the end of the year, by status.
    outbox: BTreeMap<String, i64>,
    /// Messages the sink received, by kind.
    received: BTreeMap<String, u64>,
    /// Routine messages per (person, working day) with any: counts, sorted.
    routine_per_person_day: Vec<u32>,
    /// Person-days with an SLT digest as well as a routine message.
    digest_days: usize,
    /// Completions made by the simulated staff.
    completed: usize,
    peak_mib: f64,
}

fn main() -> ExitCode {
    if let Ok(backend) = std::env::var(SCENARIO_ENV) {
        let mut runtime = if std::env::var_os("QALOOP_BENCH_CURRENT_THREAD").is_some() {
            tokio::runtime::Builder::new_current_thread()
        } else {
            tokio::runtime::Builder::new_multi_thread()
        };
        let result = runtime
            .enable_all()
            .build()
            .map_err(BoxError::from)
            .and_then(|rt| rt.block_on(run(&backend)));
        return match result.and_then(|o| Ok(serde_json::to_string(&o)?)) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{backend}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    parent()
}

// ---- the parent ---------------------------------------------------------------------------

fn parent() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "- {} cores; load average before the run: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("cannot find the benchmark executable");
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    let mut results = Vec::new();
    for backend in ["sqlite", "postgres"] {
        if !filters.is_empty() && !filters.iter().any(|f| backend.contains(f.as_str())) {
            continue;
        }
        if backend == "postgres"
            && let Err(e) = pg_reachable()
        {
            println!(
                "- NOTICE: PostgreSQL at {} is unreachable ({e}); skipped",
                pg_url()
            );
            continue;
        }
        eprintln!("running {backend} …");
        let output = Command::new(&exe)
            .env(SCENARIO_ENV, backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output();
        let parsed = output.map_err(BoxError::from).and_then(|out| {
            if !out.status.success() {
                return Err(format!("child exited with {}", out.status).into());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(serde_json::from_str::<Outcome>(
                text.lines().last().unwrap_or_default(),
            )?)
        });
        match parsed {
            Ok(o) => results.push(o),
            Err(e) => {
                eprintln!("{backend} failed: {e}");
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

fn pg_reachable() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let options = PgConnectOptions::from_str(&pg_url())?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect_with(&options),
        )
        .await
        .map_err(|_| "timed out after 5 s")??;
        conn.close().await?;
        Ok(())
    })
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn print_report(results: &[Outcome]) {
    println!();
    println!(
        "| backend | staff / team managers | days (working) | working-day pass mean s | p99 s | max s (day) | 07:30 pass mean s | 08:00 pass mean s | other days mean s | outbox rows | sent | routine msgs per person per working day max | p99 | person-days | peak MiB |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for o in results {
        let mut passes = o.working_pass_s.clone();
        passes.sort_by(f64::total_cmp);
        let mean = passes.iter().sum::<f64>() / passes.len().max(1) as f64;
        let rows: i64 = o.outbox.values().sum();
        println!(
            "| {} | {} / {} | {} ({}) | {:.3} | {:.3} | {:.3} ({}) | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {:.1} |",
            o.backend,
            o.staff,
            o.team_managers,
            o.days,
            o.working_days,
            mean,
            quantile(&passes, 0.99),
            passes.last().copied().unwrap_or_default(),
            o.slowest_day,
            o.early_mean_s,
            o.send_mean_s,
            o.idle_mean_s,
            rows,
            o.outbox.get("sent").copied().unwrap_or_default(),
            o.routine_per_person_day.last().copied().unwrap_or_default(),
            quantile(&o.routine_per_person_day, 0.99),
            o.routine_per_person_day.len(),
            o.peak_mib,
        );
    }
    println!();
    for o in results {
        println!(
            "- {}: {} days from {}, email `connections = {}`; outbox by status {:?}; received by \
             kind {:?}; {} completions; {} person-days with an SLT digest besides a routine message",
            o.backend,
            o.days,
            o.first_day,
            o.connections,
            o.outbox,
            o.received,
            o.completed,
            o.digest_days
        );
    }
    println!();
    println!("| target | backend | measured | result |");
    println!("|---|---|--:|---|");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    for o in results {
        let max = o.working_pass_s.iter().copied().fold(0.0, f64::max);
        println!(
            "| working day's full pass < {} s (max) | {} | {max:.3} s | {} |",
            PASS_TARGET.as_secs(),
            o.backend,
            verdict(max < PASS_TARGET.as_secs_f64()),
        );
        let most = o.routine_per_person_day.last().copied().unwrap_or_default();
        println!(
            "| ≤ 1 routine message per person per working day | {} | {most} | {} |",
            o.backend,
            verdict(most <= 1),
        );
    }
}

// ---- the child: one backend's year ---------------------------------------------------------

fn setting(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}: {e}"))?),
        Err(_) => Ok(default),
    }
}

/// Where the child's own sqlx pool (for the simulated staff's work and the counts) connects.
enum Side {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool, String),
}

async fn run(backend: &str) -> Result<Outcome, BoxError> {
    let staff = setting("QALOOP_BENCH_STAFF", 10_000)?;
    let team_managers = setting("QALOOP_BENCH_TEAM_MANAGERS", 7_000)?;
    let days = setting("QALOOP_BENCH_DAYS", 366)?;
    let per_day = setting("QALOOP_BENCH_PER_DAY", 0)? > 0;
    let connections = setting("QALOOP_BENCH_CONNECTIONS", 4)?;
    let first_day: Date = match std::env::var("QALOOP_BENCH_FROM") {
        Ok(v) => v.parse().map_err(|e| format!("QALOOP_BENCH_FROM: {e}"))?,
        Err(_) => FIRST_DAY,
    };
    let sink = Sink::start().await?;

    let config = NotifyConfig {
        base_url: "https://qaloop.example-council.test".into(),
        ..NotifyConfig::default()
    };
    let channel: ChannelSettings = toml::from_str(&format!(
        "kind = \"email\"\nname = \"email\"\nhost = \"127.0.0.1\"\nport = {}\n\
         security = \"none\"\nfrom = \"QA schedule <qa@example-council.test>\"\n{}",
        sink.port,
        // 1 is the default; not written, so the file also suits a build without the key.
        if connections == 1 {
            String::new()
        } else {
            format!("connections = {connections}\n")
        }
    ))?;
    let mut ctx = context(first_day)?;
    let keys = qaloop::links::LinkKeys::new(
        qaloop::links::Key::new(vec![7; 32]).ok_or("a link key")?,
        None,
        30,
    );
    ctx.announcer = Some(Arc::new(
        Router::new(
            &config,
            std::slice::from_ref(&channel),
            "Example Council",
            ctx.tz.clone(),
            vec![],
        )
        .with_links(keys),
    ));
    let ChannelSettings::Email(email) = &channel else {
        return Err("an email channel".into());
    };
    let smtp: Arc<dyn Channel> = Arc::new(
        qaloop::notify::email::SmtpChannel::new(email, std::path::Path::new("."))
            .map_err(|e| e.to_string())?,
    );
    let dispatcher = Dispatcher::new(
        [("email".to_owned(), smtp)].into(),
        Arc::new(Templates::load(None)?),
        RetryPolicy::from_config(&config),
        None,
    )
    .with_working_hours_of(&ctx);

    let records = org::synthetic_org(staff, team_managers, &ctx.schedule);
    let dir = tempfile::tempdir()?;
    // As a deployment runs it: a sent journal on local disk (beside the SQLite file; on
    // PostgreSQL where `notify.sent_journal` names it), unless `QALOOP_BENCH_PG_NOTES=database`
    // asks for PostgreSQL's per-delivery notes in the database.
    let journal = match backend {
        "sqlite" => Some(dir.path().join("year.db.sent")),
        _ if database_notes() => None,
        _ => Some(dir.path().join("qaloop.sent")),
    };
    let dispatcher = dispatcher.with_journal(journal);
    let (store, side) = match backend {
        "sqlite" => {
            let path = dir.path().join("year.db");
            let url = format!("sqlite://{}", path.display());
            let store = Store::connect(&url, POOL_SIZE).await?;
            store.migrate().await?;
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            (store, Side::Sqlite(pool))
        }
        _ => {
            let base = PgConnectOptions::from_str(&pg_url())?;
            let schema = format!("qaloop_notify_bench_{}", std::process::id());
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
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            (store, Side::Postgres(pool, schema))
        }
    };

    let tz = ctx.tz.clone();
    let local = |day: Date, hour: i8| -> Result<Timestamp, jiff::Error> {
        Ok(day.at(hour, 0, 0, 0).to_zoned(tz.clone())?.timestamp())
    };
    let first = local(first_day, 7)?;
    import_staff(&store, &ctx, &records, "bench", first_day, first).await?;
    // Who falls behind: every 20th team manager is 15 days late, every 100th (from the 7th)
    // never completes anything.
    let lateness = |assignee: &str| -> Option<i64> {
        let n: usize = assignee.strip_prefix('T')?.parse().ok()?;
        if n % 100 == 7 {
            Some(i64::MAX)
        } else if n.is_multiple_of(20) {
            Some(15)
        } else {
            None
        }
    };

    let pass = |now: Timestamp| {
        let (store, ctx, dispatcher) = (&store, &ctx, &dispatcher);
        async move {
            let started = Instant::now();
            reconcile(store, ctx, now).await?;
            let reconciled = started.elapsed();
            qaloop::notify::daily::decide(store, ctx, now).await?;
            let decided = started.elapsed();
            let report = dispatcher.dispatch(store, now).await?;
            let phases = [
                reconciled,
                decided - reconciled,
                started.elapsed() - decided,
            ];
            Ok::<_, BoxError>((started.elapsed(), phases, report.sent))
        }
    };
    let phases = |(_, [r, d, s], sent): &(Duration, [Duration; 3], usize)| {
        format!(
            "reconcile {:.3} + decide {:.3} + dispatch {:.3} ({sent} sent)",
            r.as_secs_f64(),
            d.as_secs_f64(),
            s.as_secs_f64()
        )
    };

    let mut working_pass_s = Vec::new();
    let (mut early, mut send, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    let mut slowest = (Duration::ZERO, first_day);
    let mut per_person_day: Vec<u32> = Vec::new();
    let mut digest_days = 0;
    let mut completed = 0;
    let mut day = first_day;
    let mut simulated = 0;
    while day <= LAST_DAY && simulated < days {
        let early_pass = pass(local(day, 7)?.checked_add(30.minutes())?).await?;
        let send_pass = pass(local(day, 8)?).await?;
        let (a, b) = (early_pass.0, send_pass.0);
        if ctx.calendar.is_working_day(day) {
            if per_day {
                eprintln!(
                    "{backend} {day}: 07:30 {:.3} s ({}), 08:00 {:.3} s ({})",
                    a.as_secs_f64(),
                    phases(&early_pass),
                    b.as_secs_f64(),
                    phases(&send_pass),
                );
            }
            working_pass_s.push((a + b).as_secs_f64());
            early.push(a.as_secs_f64());
            send.push(b.as_secs_f64());
            if a + b > slowest.0 {
                slowest = (a + b, day);
            }
        } else {
            idle.push((a + b).as_secs_f64());
        }
        // The day's messages, per recipient.
        let mut routine: HashMap<String, (u32, bool)> = HashMap::new();
        for (rcpt, kind) in sink.drain() {
            let entry = routine.entry(rcpt).or_default();
            if NOT_ROUTINE.contains(&kind.as_str()) {
                entry.1 = true;
            } else {
                entry.0 += 1;
            }
        }
        if ctx.calendar.is_working_day(day) {
            for (count, digest) in routine.into_values() {
                if count > 0 {
                    per_person_day.push(count);
                    digest_days += usize::from(digest);
                }
            }
        }
        // The staff's work of the day, at 14:00.
        if ctx.calendar.is_working_day(day) {
            let open = store
                .assignments(&AssignmentFilter {
                    statuses: vec![Status::Open],
                    ..Default::default()
                })
                .await?;
            let done: Vec<i64> = open
                .iter()
                .filter(|a| {
                    let when = match lateness(&a.assignee.to_string()) {
                        Some(i64::MAX) => return false,
                        Some(late) => a.due.checked_add(late.days()),
                        None => a.due.checked_sub((a.id % 10).days()),
                    };
                    let created = ctx.today(a.created_at);
                    when.is_ok_and(|when| day >= when.max(created))
                })
                .map(|a| a.id)
                .collect();
            completed += done.len();
            complete_all(&side, &done, &format_instant(local(day, 14)?)).await?;
        }
        day = day.checked_add(1.day())?;
        simulated += 1;
    }
    let peak_mib = peak_rss_mib()?;
    let (assignments, _) = store.counts().await?;
    let outbox = outbox_counts(&side).await?;
    let received = sink.by_kind();
    let sent = outbox.get("sent").copied().unwrap_or_default() as u64;
    if received.values().sum::<u64>() != sent {
        return Err(format!(
            "the sink received {} messages; the outbox has {sent} sent",
            received.values().sum::<u64>()
        )
        .into());
    }
    store.close().await;
    if let Side::Postgres(pool, schema) = &side {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(pool)
            .await?;
    }
    per_person_day.sort_unstable();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(Outcome {
        backend: backend.to_owned(),
        staff,
        team_managers,
        days: simulated,
        first_day: first_day.to_string(),
        connections,
        working_days: working_pass_s.len(),
        early_mean_s: mean(&early),
        send_mean_s: mean(&send),
        idle_mean_s: mean(&idle),
        working_pass_s,
        slowest_day: slowest.1.to_string(),
        assignments,
        outbox,
        received,
        routine_per_person_day: per_person_day,
        digest_days,
        completed,
        peak_mib,
    })
}

/// The simulated staff complete `ids` at `at`: the writes of a completion (the assignment, a
/// `completed` history row, its unsent notices cancelled), in one transaction.
async fn complete_all(side: &Side, ids: &[i64], at: &str) -> Result<(), BoxError> {
    macro_rules! complete_on {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await?;
            for chunk in ids.chunks(1000) {
                let list = |qb: &mut QueryBuilder<_>| {
                    let mut ids = qb.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    qb.push(")");
                };
                let mut qb =
                    QueryBuilder::new("UPDATE assignments SET status = 'done', completed_at = ");
                qb.push_bind(at)
                    .push(", completed_by = assignee WHERE status = 'open' AND id IN (");
                list(&mut qb);
                qb.build().execute(&mut *tx).await?;
                let mut qb = QueryBuilder::new(
                    "INSERT INTO assignment_history (assignment_id, event, actor, at, detail, via) \
                     SELECT id, 'completed', assignee, ",
                );
                qb.push_bind(at)
                    .push(", '', 'link' FROM assignments WHERE id IN (");
                list(&mut qb);
                qb.build().execute(&mut *tx).await?;
                let mut qb = QueryBuilder::new(
                    "UPDATE outbox SET status = 'cancelled', last_error = 'assignment completed' \
                     WHERE status IN ('pending', 'failed') AND assignment_id IN (",
                );
                list(&mut qb);
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }};
    }
    match side {
        Side::Sqlite(pool) => complete_on!(pool),
        Side::Postgres(pool, _) => complete_on!(pool),
    }
    Ok(())
}

async fn outbox_counts(side: &Side) -> Result<BTreeMap<String, i64>, BoxError> {
    const SQL: &str = "SELECT status, CAST(COUNT(*) AS BIGINT) FROM outbox GROUP BY status";
    let rows: Vec<(String, i64)> = match side {
        Side::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        Side::Postgres(pool, _) => sqlx::query_as(SQL).fetch_all(pool).await?,
    };
    Ok(rows.into_iter().collect())
}

/// The shipped schedule and bank holidays, Europe/London, work from `first_day`.
fn context(first_day: Date) -> Result<Context, BoxError> {
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
        start_date: Some(first_day),
    })
}

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

// ---- the sink -------------------------------------------------------------------------------

/// A loopback SMTP server that notes each message's recipient and kind and keeps nothing else.
struct Sink {
    port: u16,
    /// (recipient, kind) since the last drain.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Every message received, by kind.
    kinds: Mutex<BTreeMap<String, u64>>,
}

impl Sink {
    async fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(smtp_session(stream, Arc::clone(&shared)));
            }
        });
        Ok(Sink {
            port,
            seen,
            kinds: Mutex::new(BTreeMap::new()),
        })
    }

    fn drain(&self) -> Vec<(String, String)> {
        let drained = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        for (_, kind) in &drained {
            *kinds.entry(kind.clone()).or_default() += 1;
        }
        drained
    }

    fn by_kind(&self) -> BTreeMap<String, u64> {
        self.drain();
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Just enough SMTP for lettre; notes RCPT TO and the `Message-ID`'s first part per message.
async fn smtp_session(
    stream: TcpStream,
    seen: Arc<Mutex<Vec<(String, String)>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP qaloop bench sink\r\n")
        .await?;
    let (mut rcpt, mut kind, mut in_data) = (String::new(), String::new(), false);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        // Acknowledge at once rather than after Linux's delayed-ACK timer (~40 ms): lettre
        // writes a message's body and its final `.` separately, and with Nagle's algorithm the
        // second write waits for the first's ACK (as in `benches/dispatch.rs`). Only when the
        // next line needs a read from the socket: lines already buffered brought no new data,
        // and a `setsockopt` per line cost the sink (which shares the two cores with qaloop)
        // over a tenth of the samples of a big morning's send.
        if lines.buffer().is_empty() {
            let _ = socket2::SockRef::from(lines.get_ref().as_ref()).set_tcp_quickack(true);
        }
        let text = line.trim_end();
        if in_data {
            if text == "." {
                in_data = false;
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((std::mem::take(&mut rcpt), std::mem::take(&mut kind)));
                write.write_all(b"250 2.0.0 OK queued\r\n").await?;
            } else if kind.is_empty()
                && let Some(id) = text
                    .strip_prefix("Message-ID: <")
                    .or_else(|| text.strip_prefix("Message-Id: <"))
            {
                kind = id.split('-').next().unwrap_or_default().to_owned();
            }
            continue;
        }
        let verb = text
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write
                    .write_all(b"250-localhost\r\n250 8BITMIME\r\n")
                    .await?
            }
            "RCPT" => {
                rcpt = text
                    .split_once('<')
                    .and_then(|(_, r)| r.split_once('>'))
                    .map(|(r, _)| r.to_owned())
                    .unwrap_or_default();
                write.write_all(b"250 2.0.0 OK\r\n").await?;
            }
            "DATA" => {
                in_data = true;
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"250 2.0.0 OK\r\n").await?,
        }
    }
}

/// `QALOOP_BENCH_PG_NOTES=database`: PostgreSQL without a sent journal file.
fn database_notes() -> bool {
    std::env::var("QALOOP_BENCH_PG_NOTES").is_ok_and(|v| v == "database")
}
