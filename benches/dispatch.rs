//! Dispatch throughput and memory: qaloop's outbox dispatcher against a bare send loop.
//!
//! For each channel (email over SMTP, a Slack-style webhook over HTTP) and queue size N, the
//! bench queues N `new_assignment` rows in a fresh store (a SQLite file, and a PostgreSQL schema
//! of its own) and times [`Dispatcher::dispatch`] until all N are sent to a sink on loopback.
//! The baseline is a bare loop that sends the same N messages, their templates rendered
//! beforehand, one after another: each built into an email and sent through lettre's pooled SMTP
//! transport, or turned into the Slack JSON and posted with a plain `reqwest::Client`. The ratio
//! of the two rates is what the outbox costs (claiming, rendering, recording each outcome); the
//! issue's target is at least 0.8.
//!
//! Each measurement runs in a child process of its own (this binary, re-executed with
//! [`SCENARIO_ENV`] set), so its peak resident memory (`VmHWM`) is that of one dispatch and what
//! it needs (runtime, database pool, templates), not of the set-up: the parent seeds the store,
//! runs the sinks, counts what they receive, checks the outbox afterwards and prints the table.
//! The sinks count messages and keep no bodies.
//!
//! `cargo bench --locked --bench dispatch` (or `scripts/bench-dispatch.sh`). Figures and how to
//! read them: `BENCHMARKS.md`, "Dispatch". Settings, all optional:
//! - `QALOOP_BENCH_SIZES`: queue sizes, comma-separated (default `1000,10000`).
//! - `QALOOP_BENCH_RUNS`: runs per figure; the median rate is reported (default 3).
//! - `QALOOP_BENCH_CHANNELS`: `email`, `webhook` or both (the default), comma-separated.
//! - `QALOOP_BENCH_BACKENDS`: `sqlite`, `postgres` or both (the default), comma-separated.
//! - `QALOOP_BENCH_CONNECTIONS`: the qaloop channel's `connections` (unset: the key is left
//!   out, so the channel's default). The bare loop always sends one at a time.
//! - `QALOOP_BENCH_CURRENT_THREAD`: set, each measurement (qaloop's and the bare loop's) runs on
//!   a current-thread runtime, as `serve` ran its passes before it was given two worker
//!   threads; unset, on a multi-threaded one with a worker per core, as `tick` runs (on a
//!   2-core machine, also `serve`'s two workers).
//! - `QALOOP_BENCH_PG_NOTES=database`: on PostgreSQL, record each delivery in the database at
//!   once (no `notify.sent_journal`) instead of noting it in a sent journal file.
//! - `QALOOP_TEST_PG_URL`: the PostgreSQL server (default `postgres://postgres@127.0.0.1:5432/test`);
//!   when it does not answer, PostgreSQL rows are skipped with a notice.

// The daemon's allocator (src/main.rs), so these figures are its figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "../tests/support/org.rs"]
mod org;
#[allow(dead_code)]
#[path = "../tests/support/store.rs"]
mod store;

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use jiff::Timestamp;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use qaloop::notify::context::{Item, TemplateContext};
use qaloop::notify::dispatcher::{Dispatcher, RetryPolicy};
use qaloop::notify::templates::Templates;
use qaloop::notify::{CalendarEvent, Channel, ChannelSettings, Kind, Message, Recipient};
use qaloop::org::StaffRecord;
use qaloop::store::{NewOutbox, OutboxStatus, Store};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use store::{Target, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Set in a child process: the JSON of the [`Scenario`] it measures.
const SCENARIO_ENV: &str = "QALOOP_DISPATCH_BENCH_SCENARIO";
/// People in the staff list. The same for every queue size, so that only the queue grows
/// between the N = 1,000 and N = 10,000 runs and the memory figures compare like with like
/// (a queue longer than this gives some people several messages).
const STAFF: usize = 10_000;
/// The target: qaloop's rate at least this share of the bare loop's.
const TARGET_RATIO: f64 = 0.8;
/// The one instant of the whole bench: rows are queued at it and dispatched at it.
const NOW: &str = "2027-05-10T10:00:00Z";
/// `[notify] base_url` of the synthetic council.
const BASE_URL: &str = "https://qaloop.example-council.test";
/// `From:` of every email, as a council would configure it.
const FROM: &str = "QA schedule <qa@example-council.test>";

/// Which channel a measurement sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ChannelKind {
    /// SMTP, security `none`, to the SMTP sink.
    Email,
    /// A Slack incoming webhook, to the HTTP sink.
    Webhook,
}

impl ChannelKind {
    /// The `[[channels]] name` the rows are queued for.
    fn name(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "chat",
        }
    }

    /// What the table calls it.
    fn label(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
        }
    }
}

/// What sends the messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Path {
    /// qaloop's dispatcher draining the outbox of this store.
    Qaloop(Db),
    /// The bare loop: lettre or reqwest directly, the messages rendered beforehand.
    Bare,
}

/// A store the parent seeded, for the child to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Db {
    /// A SQLite URL.
    Sqlite(String),
    /// A PostgreSQL server and the schema to use on it.
    Postgres { url: String, schema: String },
}

/// One measurement, handed to a child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scenario {
    /// qaloop or bare.
    path: Path,
    /// Email or webhook.
    channel: ChannelKind,
    /// Messages to send.
    n: usize,
    /// The sink's port on 127.0.0.1.
    port: u16,
}

/// What a child reports on its stdout.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Measured {
    /// Wall time of the sends alone (not the set-up, not the pre-rendering).
    seconds: f64,
    /// CPU time of the child over the same span, all threads, user and system.
    cpu_seconds: f64,
    /// Peak resident set of the child, KiB (`VmHWM`).
    peak_kib: u64,
}

fn main() -> anyhow::Result<()> {
    match std::env::var(SCENARIO_ENV) {
        Ok(json) => {
            let scenario: Scenario = serde_json::from_str(&json).context("reading the scenario")?;
            // One thread when asked (as `serve` once ran); else a worker per core, as `tick`.
            let runtime = if std::env::var_os("QALOOP_BENCH_CURRENT_THREAD").is_some() {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Runtime::new()?
            };
            let measured = runtime.block_on(child(scenario))?;
            println!("{}", serde_json::to_string(&measured)?);
            Ok(())
        }
        Err(_) => tokio::runtime::Runtime::new()?.block_on(parent()),
    }
}

// ----- the parent: seed, sinks, children, table --------------------------------------------------

/// One line of the table: medians over the runs, and the largest peaks.
struct Row {
    channel: ChannelKind,
    backend: &'static str,
    n: usize,
    /// Messages per second.
    qaloop: f64,
    bare: f64,
    /// The median of each run's qaloop rate over the bare rate measured just before it: pairing
    /// the runs keeps a busy moment on the machine from landing on one side only.
    ratio: f64,
    /// Peak resident set of the child processes, MiB.
    peak_mib: f64,
    bare_peak_mib: f64,
    /// CPU per message of the child processes, µs.
    qaloop_cpu_us: f64,
    bare_cpu_us: f64,
}

async fn parent() -> anyhow::Result<()> {
    let sizes: Vec<usize> = list_setting("QALOOP_BENCH_SIZES", "1000,10000")?
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .context("QALOOP_BENCH_SIZES: give queue sizes such as 1000,10000")?;
    ensure!(
        sizes.iter().all(|&n| n >= 1),
        "QALOOP_BENCH_SIZES: each size must be at least 1"
    );
    let runs: usize = std::env::var("QALOOP_BENCH_RUNS")
        .unwrap_or_else(|_| "3".to_owned())
        .parse()
        .context("QALOOP_BENCH_RUNS: give a number of runs")?;
    ensure!(runs >= 1, "QALOOP_BENCH_RUNS: at least 1");

    let smtp = Sink::start(smtp_session).await?;
    let http = Sink::start(http_session).await?;
    let channels: Vec<ChannelKind> = list_setting("QALOOP_BENCH_CHANNELS", "email,webhook")?
        .iter()
        .map(|name| match name.as_str() {
            "email" => Ok(ChannelKind::Email),
            "webhook" => Ok(ChannelKind::Webhook),
            other => bail!("QALOOP_BENCH_CHANNELS: `{other}` is not email or webhook"),
        })
        .collect::<anyhow::Result<_>>()?;
    let wanted = list_setting("QALOOP_BENCH_BACKENDS", "sqlite,postgres")?;
    let pg_available = TestDb::postgres().await.is_some();
    let backends: Vec<&'static str> = ["sqlite", "postgres"]
        .into_iter()
        .filter(|b| wanted.iter().any(|w| w == b))
        .filter(|b| *b != "postgres" || pg_available)
        .collect();

    let mut rows = Vec::new();
    for channel in channels {
        let sink = match channel {
            ChannelKind::Email => &smtp,
            ChannelKind::Webhook => &http,
        };
        for &n in &sizes {
            let mut bare = Vec::new();
            let mut by_backend: HashMap<&'static str, Vec<Measured>> = HashMap::new();
            for run in 1..=runs {
                eprintln!("{channel:?} N={n} run {run}/{runs}");
                let scenario = Scenario {
                    path: Path::Bare,
                    channel,
                    n,
                    port: sink.port,
                };
                bare.push(measure(&scenario, sink).await?);
                for &backend in &backends {
                    let measured = measure_qaloop(backend, channel, n, sink).await?;
                    by_backend.entry(backend).or_default().push(measured);
                }
            }
            let bare_rate = median(bare.iter().map(|m| n as f64 / m.seconds));
            let bare_peak = bare.iter().map(|m| m.peak_kib).max().unwrap_or(0);
            let bare_cpu = median(bare.iter().map(|m| m.cpu_seconds * 1e6 / n as f64));
            for backend in ["sqlite", "postgres"] {
                let Some(measured) = by_backend.get(backend) else {
                    continue;
                };
                rows.push(Row {
                    channel,
                    backend,
                    n,
                    qaloop: median(measured.iter().map(|m| n as f64 / m.seconds)),
                    bare: bare_rate,
                    ratio: median(
                        measured
                            .iter()
                            .zip(&bare)
                            .map(|(q, b)| b.seconds / q.seconds),
                    ),
                    peak_mib: mib(measured.iter().map(|m| m.peak_kib).max().unwrap_or(0)),
                    bare_peak_mib: mib(bare_peak),
                    qaloop_cpu_us: median(measured.iter().map(|m| m.cpu_seconds * 1e6 / n as f64)),
                    bare_cpu_us: bare_cpu,
                });
            }
        }
    }

    print_table(&rows, runs, pg_available);
    Ok(())
}

/// Seeds a fresh store on `backend`, runs the qaloop path against it in a child, and checks the
/// outbox afterwards: everything sent, nothing pending, failed or dead.
async fn measure_qaloop(
    backend: &str,
    channel: ChannelKind,
    n: usize,
    sink: &Sink,
) -> anyhow::Result<Measured> {
    let db = match backend {
        "sqlite" => TestDb::sqlite().await,
        _ => TestDb::postgres()
            .await
            .context("PostgreSQL stopped answering")?,
    };
    seed(&db.store, channel, n).await?;
    db.store.close().await;
    let target = match &db.target {
        Target::Sqlite(url) => Db::Sqlite(url.clone()),
        Target::Postgres { url, schema } => Db::Postgres {
            url: url.clone(),
            schema: schema.clone(),
        },
    };
    let scenario = Scenario {
        path: Path::Qaloop(target),
        channel,
        n,
        port: sink.port,
    };
    let measured = measure(&scenario, sink).await?;

    let store = db.second_store().await;
    let sent = store.outbox(Some(OutboxStatus::Sent), i64::MAX).await?;
    ensure!(
        sent.len() == n,
        "{backend}: {} of {n} rows sent",
        sent.len()
    );
    for status in [
        OutboxStatus::Pending,
        OutboxStatus::Failed,
        OutboxStatus::Dead,
    ] {
        let left = store.outbox(Some(status), 1).await?;
        ensure!(left.is_empty(), "{backend}: rows left {status:?}");
    }
    store.close().await;
    Ok(measured)
}

/// Runs `scenario` in a child process and checks the sink received exactly N messages.
async fn measure(scenario: &Scenario, sink: &Sink) -> anyhow::Result<Measured> {
    let before = sink.received();
    let json = serde_json::to_string(scenario)?;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(std::env::current_exe()?)
            .env(SCENARIO_ENV, json)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await??;
    if !output.status.success() {
        bail!("the {scenario:?} child failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let measured: Measured = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("reading the child's report: {stdout}"))?;
    let received = sink.received() - before;
    ensure!(
        received == scenario.n as u64,
        "{scenario:?}: the sink received {received} messages, not {}",
        scenario.n
    );
    Ok(measured)
}

/// Imports the staff list and queues N `new_assignment` rows for `channel`: row `i` is for
/// person `i % STAFF`, so each person has one up to N = [`STAFF`].
async fn seed(store: &Store, channel: ChannelKind, n: usize) -> anyhow::Result<()> {
    let now: Timestamp = NOW.parse()?;
    let ctx = org::context();
    qaloop::engine::import_staff(store, &ctx, &staff(), "bench", ctx.today(now), now).await?;
    let rows: Vec<NewOutbox> = (0..n)
        .map(|i| NewOutbox {
            key: format!(
                "new_assignment:a{}:{}::{}:{}",
                i + 1,
                staff_id(i % STAFF),
                staff_id(i % STAFF),
                channel.name()
            ),
            kind: Kind::NewAssignment.as_str().to_owned(),
            channel: channel.name().to_owned(),
            recipient: staff_id(i % STAFF),
            assignment_id: None,
            context: serde_json::to_string(&template_context(i)).expect("a context serializes"),
            not_before: now,
            suppressed: false,
        })
        .collect();
    let queued = store.enqueue(&rows, now).await?;
    ensure!(queued == n as u64, "queued {queued} of {n}");
    Ok(())
}

/// A comma-separated setting from the environment, or its default.
fn list_setting(name: &str, default: &str) -> anyhow::Result<Vec<String>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    ensure!(
        items.iter().all(|s| !s.is_empty()),
        "{name}: empty item in `{text}`"
    );
    Ok(items)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_table(rows: &[Row], runs: usize, pg_available: bool) {
    println!();
    println!(
        "Dispatch: qaloop's dispatcher vs a bare send loop, loopback sinks, median of {runs} run(s)"
    );
    if !pg_available {
        println!("(PostgreSQL unreachable: its rows are skipped; set QALOOP_TEST_PG_URL)");
    }
    println!();
    println!(
        "| channel | backend  |      N | qaloop msgs/s | bare msgs/s | ratio | peak MiB | bare peak MiB | CPU µs/msg qaloop | CPU µs/msg bare | vs {TARGET_RATIO} |"
    );
    println!(
        "|---------|----------|-------:|--------------:|------------:|------:|---------:|--------------:|------------------:|----------------:|--------|"
    );
    for row in rows {
        println!(
            "| {:<7} | {:<8} | {:>6} | {:>13.0} | {:>11.0} | {:>5.2} | {:>8.1} | {:>13.1} | {:>17.0} | {:>15.0} | {:<6} |",
            row.channel.label(),
            row.backend,
            row.n,
            row.qaloop,
            row.bare,
            row.ratio,
            row.peak_mib,
            row.bare_peak_mib,
            row.qaloop_cpu_us,
            row.bare_cpu_us,
            if row.ratio >= TARGET_RATIO {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
    println!();
    println!(
        "ratio: median over the runs of qaloop's rate / the bare rate measured just before it.\n\
         peak MiB: VmHWM of the child process that ran the qaloop path (the whole process: \
         runtime, database pool, templates); bare peak MiB: the bare loop's, which holds all N \
         rendered messages.\n\
         CPU µs/msg: user + system time of that child over the timed span, all its threads \
         (SQLite runs inside it; the PostgreSQL server and the sinks do not)."
    );
}

// ----- the synthetic council ---------------------------------------------------------------

/// Staff id of person `i`.
fn staff_id(i: usize) -> String {
    format!("S{i:05}")
}

/// A staff list of [`STAFF`] practitioners in teams of ten, each with an email address and a
/// Slack member id (so webhook posts carry a mention, as they would for real).
fn staff() -> Vec<StaffRecord> {
    (0..STAFF)
        .map(|i| {
            let manager = (i > 0).then(|| staff_id((i - 1) / 10));
            let mut record = org::person(&staff_id(i), &["practitioner"], manager.as_deref());
            record.chat_id = Some(format!("U{i:08}"));
            record
        })
        .collect()
}

/// What the planner would queue for new case file audit number `i + 1`, given to person
/// `i % STAFF`.
fn template_context(i: usize) -> TemplateContext {
    let id = i as i64 + 1;
    TemplateContext {
        organisation: "Example Council".to_owned(),
        base_url: BASE_URL.to_owned(),
        recipient: staff_id(i % STAFF),
        today: "2027-05-10".to_owned(),
        items: vec![Item {
            id,
            activity: "file-audit".to_owned(),
            title: "Case file audit".to_owned(),
            period: "2027-05".to_owned(),
            due: "2027-05-28".to_owned(),
            due_long: "Friday 28 May 2027".to_owned(),
            days_until_due: Some(14),
            days_overdue: None,
            assignee: staff_id(i % STAFF),
            subject: None,
            link: format!("{BASE_URL}/assignments/{id}"),
            ..Item::default()
        }],
        ..TemplateContext::new(Kind::NewAssignment)
    }
}

/// The message the dispatcher makes of row `i` (the same template, recipient and calendar
/// entry), for the bare loop to send.
fn message(templates: &Templates, channel: ChannelKind, i: usize) -> anyhow::Result<Message> {
    let context = template_context(i);
    let rendered = templates.render(Kind::NewAssignment, &context)?;
    let item = &context.items[0];
    Ok(Message {
        key: format!(
            "new_assignment:a{}:{}::{}:{}",
            item.id,
            staff_id(i % STAFF),
            staff_id(i % STAFF),
            channel.name()
        ),
        kind: Kind::NewAssignment,
        recipient: Recipient {
            staff_id: staff_id(i % STAFF),
            email: Some(format!(
                "{}@example-council.test",
                staff_id(i % STAFF).to_lowercase()
            )),
            chat_id: Some(format!("U{:08}", i % STAFF)),
        },
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        link: Some(item.link.clone()),
        calendar: Some(CalendarEvent {
            uid: format!("qaloop-assignment-{}", item.id),
            date: item.due.parse()?,
            summary: format!("Due: {} ({})", item.title, item.period),
            url: Some(item.link.clone()),
        }),
        composed_at: jiff::Timestamp::now(),
    })
}

// ----- the child: one measurement ------------------------------------------------------------

async fn child(scenario: Scenario) -> anyhow::Result<Measured> {
    let times = match &scenario.path {
        Path::Qaloop(db) => qaloop_path(&scenario, db).await?,
        Path::Bare => match scenario.channel {
            ChannelKind::Email => bare_email(&scenario).await?,
            ChannelKind::Webhook => bare_webhook(&scenario).await?,
        },
    };
    Ok(Measured {
        seconds: times.wall,
        cpu_seconds: times.cpu,
        peak_kib: peak_kib()?,
    })
}

/// The dispatcher as the daemon builds it, with one channel, draining a seeded outbox.
async fn qaloop_path(scenario: &Scenario, db: &Db) -> anyhow::Result<Times> {
    let store = match db {
        Db::Sqlite(url) => Store::connect(url, 5).await?,
        Db::Postgres { url, schema } => {
            let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
            Store::connect_postgres(options, 5).await?
        }
    };
    let port = scenario.port;
    let connections = std::env::var("QALOOP_BENCH_CONNECTIONS")
        .map(|n| format!("connections = {n}\n"))
        .unwrap_or_default();
    let settings: ChannelSettings = toml::from_str(&match scenario.channel {
        ChannelKind::Email => format!(
            "kind = \"email\"\nname = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             security = \"none\"\nfrom = \"{FROM}\"\n{connections}"
        ),
        ChannelKind::Webhook => format!(
            "kind = \"slack\"\nname = \"chat\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             {connections}"
        ),
    })?;
    let here = std::path::Path::new(".");
    let channel: Arc<dyn Channel> = match &settings {
        ChannelSettings::Email(email) => Arc::new(
            qaloop::notify::email::SmtpChannel::new(email, here).map_err(anyhow::Error::msg)?,
        ),
        other => Arc::new(
            qaloop::notify::chat::WebhookChannel::from_settings(other, here)
                .map_err(anyhow::Error::msg)?
                .context("a webhook channel")?,
        ),
    };
    // As the daemon builds it: the sent journal beside a SQLite file; on PostgreSQL where
    // `notify.sent_journal` names it, unless `QALOOP_BENCH_PG_NOTES=database` asks for each
    // delivery recorded in the database at once (the setting left out).
    let journal = match db {
        Db::Sqlite(url) => qaloop::notify::journal::path_for(url),
        Db::Postgres { schema, .. } if !database_notes() => {
            Some(std::env::temp_dir().join(format!("qaloop-dispatch-bench-{schema}.sent")))
        }
        Db::Postgres { .. } => None,
    };
    let dispatcher = Dispatcher::new(
        [(scenario.channel.name().to_owned(), channel)].into(),
        Arc::new(Templates::load(None)?),
        RetryPolicy {
            max_attempts: 3,
            give_up_after_working_days: 3,
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        None,
    )
    .with_journal(journal.clone());

    let now = NOW.parse()?;
    let stopwatch = Stopwatch::start()?;
    let report = dispatcher.dispatch(&store, now).await?;
    let times = stopwatch.stop()?;

    ensure!(
        report.sent == scenario.n && report.retrying == 0 && report.dead == 0,
        "the dispatcher reported {report:?} for {} rows",
        scenario.n
    );
    store.close().await;
    if let (Db::Postgres { .. }, Some(journal)) = (db, &journal) {
        std::fs::remove_file(journal)?;
    }
    Ok(times)
}

/// The messages of the bare loop: rendered from the templates before the clock starts, as the
/// issue asks ("pre-rendered"), so the loop measures sending alone.
fn rendered(scenario: &Scenario) -> anyhow::Result<Vec<Message>> {
    let templates = Templates::load(None)?;
    (0..scenario.n)
        .map(|i| message(&templates, scenario.channel, i))
        .collect()
}

/// lettre's pooled transport sending N rendered messages one after another: each built into an
/// email ([`qaloop::notify::email::build_email`]: MIME parts, headers, the `.ics`) and sent.
async fn bare_email(scenario: &Scenario) -> anyhow::Result<Times> {
    let messages = rendered(scenario)?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(scenario.port)
        .build();

    let stopwatch = Stopwatch::start()?;
    for message in &messages {
        let email = qaloop::notify::email::build_email(message, FROM, None)?;
        transport.send(email).await?;
    }
    stopwatch.stop()
}

/// A `reqwest::Client` posting N rendered messages one after another, each as the Slack payload
/// ([`qaloop::notify::chat::slack_payload`]) serialized to JSON.
async fn bare_webhook(scenario: &Scenario) -> anyhow::Result<Times> {
    let messages = rendered(scenario)?;
    qaloop::notify::install_crypto_provider();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/hook", scenario.port);

    let stopwatch = Stopwatch::start()?;
    for message in &messages {
        let body = serde_json::to_vec(&qaloop::notify::chat::slack_payload(message))?;
        let response = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "the sink answered {}",
            response.status()
        );
    }
    stopwatch.stop()
}

/// Wall and CPU seconds of a span.
struct Times {
    wall: f64,
    cpu: f64,
}

/// Times a span in wall-clock and in this process's CPU.
struct Stopwatch {
    wall: Instant,
    cpu: f64,
}

impl Stopwatch {
    fn start() -> anyhow::Result<Stopwatch> {
        Ok(Stopwatch {
            cpu: cpu_seconds()?,
            wall: Instant::now(),
        })
    }

    fn stop(self) -> anyhow::Result<Times> {
        let wall = self.wall.elapsed().as_secs_f64();
        Ok(Times {
            wall,
            cpu: cpu_seconds()? - self.cpu,
        })
    }
}

/// CPU seconds this process has used, all threads, user and system (`/proc/self/stat`, in
/// clock ticks of 1/100 s: Linux's `USER_HZ` on every mainstream architecture).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let after = stat
        .rsplit_once(')')
        .context("no ')' in /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/self/stat")?.parse()?)
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// This process's peak resident set, KiB.
fn peak_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

// ----- the sinks ------------------------------------------------------------------------------

/// A loopback server that counts what it receives and keeps nothing else.
struct Sink {
    /// Its port on 127.0.0.1.
    port: u16,
    /// Messages (SMTP) or requests (HTTP) received in full and answered.
    received: Arc<AtomicU64>,
}

impl Sink {
    /// Listens on a free port; each connection is served by `session`.
    async fn start<F, Fut>(session: F) -> io::Result<Sink>
    where
        F: Fn(TcpStream, Arc<AtomicU64>) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Replies go out at once rather than waiting on Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                tokio::spawn(session(stream, Arc::clone(&counter)));
            }
        });
        Ok(Sink { port, received })
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

/// Acknowledges received data at once instead of after Linux's delayed-ACK timer (~40 ms).
/// lettre writes a message's body and its final `.` separately (and an HTTP client may write a
/// request's head and body separately); with Nagle's algorithm on the client, the second write
/// waits for the ACK of the first. The option resets itself, hence once per read.
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Reads what the peer sent next into `pending`; `false` when it closed the connection.
async fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk).await?;
    quick_ack(stream);
    pending.extend_from_slice(&chunk[..read]);
    Ok(read > 0)
}

/// Just enough SMTP for lettre: greeting, EHLO, MAIL, RCPT, DATA, NOOP, RSET, QUIT. Every
/// command is accepted; each message's data is read and dropped.
async fn smtp_session(mut stream: TcpStream, received: Arc<AtomicU64>) -> io::Result<()> {
    stream
        .write_all(b"220 localhost ESMTP qaloop bench sink\r\n")
        .await?;
    let mut pending = Vec::new();
    let mut replies = Vec::new();
    let mut in_data = false;
    loop {
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = pending[start..start + end].trim_ascii_end();
            start += end + 1;
            if in_data {
                if line == b"." {
                    in_data = false;
                    received.fetch_add(1, Ordering::SeqCst);
                    replies.extend_from_slice(b"250 2.0.0 OK queued\r\n");
                }
                continue;
            }
            let verb = line.split(|&b| b == b' ').next().unwrap_or_default();
            match verb.to_ascii_uppercase().as_slice() {
                b"EHLO" => replies.extend_from_slice(b"250-localhost\r\n250 8BITMIME\r\n"),
                b"DATA" => {
                    in_data = true;
                    replies.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                }
                b"QUIT" => {
                    stream.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => replies.extend_from_slice(b"250 2.0.0 OK\r\n"),
            }
        }
        pending.drain(..start);
        if !replies.is_empty() {
            stream.write_all(&replies).await?;
            replies.clear();
        }
        if !read_more(&mut stream, &mut pending).await? {
            return Ok(());
        }
    }
}

/// HTTP/1.1 with keep-alive: reads each request's head and `Content-Length` body, answers
/// `200 OK` with an empty body.
async fn http_session(mut stream: TcpStream, received: Arc<AtomicU64>) -> io::Result<()> {
    let mut pending = Vec::new();
    loop {
        let mut start = 0;
        while let Some(head) = pending[start..]
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
        {
            let length = String::from_utf8_lossy(&pending[start..start + head])
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let end = start + head + 4 + length;
            if pending.len() < end {
                break;
            }
            start = end;
            received.fetch_add(1, Ordering::SeqCst);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await?;
        }
        pending.drain(..start);
        if !read_more(&mut stream, &mut pending).await? {
            return Ok(());
        }
    }
}

/// `QALOOP_BENCH_PG_NOTES=database`: PostgreSQL without a sent journal file.
fn database_notes() -> bool {
    std::env::var("QALOOP_BENCH_PG_NOTES").is_ok_and(|v| v == "database")
}
