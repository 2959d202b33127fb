//! The `qaloop` command line. Each command reads the clock once (`--now`, default the real
//! clock) and passes it inward; exit codes follow sysexits.

/// `println!` for command output: a reader that went away (`qaloop check | head -1`) ends the
/// command quietly with exit 0 instead of a panic; any other write error is a failure.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))?
    };
}

pub mod actions;
pub mod concerns;
pub mod output;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::Timestamp;
use jiff::civil::Date;

use crate::clock::{Clock, SystemClock};
use crate::config::{LogFormat, Settings, resolve_path};
use crate::domain::{Actor, Assignee, Refusal, Status, Via};
use crate::engine::plan::plan_window;
use crate::engine::{CompleteError, Context, cancel, complete, import_staff, reassign};
use crate::inputs::{load_context, load_staff, warnings};
use crate::org::Org;
use crate::problem::Problems;
use crate::store::{AssignmentFilter, Store};
use output::{AssignmentView, Format, PlanView, print};

/// Exit codes (sysexits.h).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Anything else went wrong.
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap uses it too).
    pub const USAGE: u8 = 2;
    /// Bad input data: a staff file, an unknown staff id.
    pub const DATAERR: u8 = 65;
    /// Not allowed: completing someone else's work.
    pub const NOPERM: u8 = 77;
    /// Bad configuration: settings, schedule, calendar, templates.
    pub const CONFIG: u8 = 78;
}

/// qaloop: runs the QA schedule of a children's services department.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $QALOOP_CONFIG, else /etc/qaloop/qaloop.toml].
    #[arg(long, global = true, env = "QALOOP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate config, schedule, calendar and staff file together; print a summary.
    Check {
        /// The moment "the next 12 months" starts from [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Apply database migrations.
    Migrate,
    /// Staff list operations.
    Staff {
        /// What to do with staff.
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Show what the schedule will assign in a window; writes nothing.
    Plan {
        /// First day (YYYY-MM-DD).
        #[arg(long)]
        from: Date,
        /// Last day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: Date,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run one pass: re-import the staff file if it changed, then create due assignments.
    Tick {
        /// The moment to run at [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Assignment operations.
    Assignments {
        /// What to do with assignments.
        #[command(subcommand)]
        command: AssignmentsCommand,
    },
    /// Actions raised by audits: the closing-the-loop tracker.
    Actions {
        /// What to do with actions.
        #[command(subcommand)]
        command: actions::ActionsCommand,
    },
    /// Urgent and health concerns recorded in audits.
    Concerns {
        /// What to do with concerns.
        #[command(subcommand)]
        command: concerns::ConcernsCommand,
    },
    /// Run the daemon.
    Serve,
    /// Back up the SQLite database to a new file (safe while serve runs), then check the copy.
    Backup {
        /// The backup file to create (must not exist).
        path: PathBuf,
        /// The moment recorded as the last backup [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Replace the SQLite database with a backup (serve must be stopped), after checking it.
    Restore {
        /// The backup file.
        path: PathBuf,
    },
    /// Packaging helpers: the man pages and shell completions (used by scripts/package.sh).
    #[command(hide = true)]
    Generate {
        /// What to generate.
        #[command(subcommand)]
        what: GenerateCommand,
    },
    /// Inspect and re-queue notifications.
    Outbox {
        /// What to do with the outbox.
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Notification operations.
    Notify {
        /// What to do.
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Print a signed link: to one assignment (`--item`), an urgent concern (`--concern`), the
    /// closing-the-loop tracker (`--tracker`), else to the person's own work page.
    Link {
        /// Whose link (they act as themselves through it).
        #[arg(long = "for", value_name = "STAFF_ID")]
        for_staff: String,
        /// The assignment it opens and completes.
        #[arg(long, value_name = "ID", conflicts_with_all = ["concern", "tracker"])]
        item: Option<i64>,
        /// The urgent concern it opens and acknowledges.
        #[arg(long, value_name = "ID", conflicts_with = "tracker")]
        concern: Option<i64>,
        /// The closing-the-loop tracker (for senior leadership and heads of service).
        #[arg(long)]
        tracker: bool,
        /// The moment it is made at; it works for `[web] link_days` [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
}

/// `qaloop generate …`
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write `qaloop.8` and one `qaloop-COMMAND.8` per command into a folder.
    Man {
        /// The folder (created if missing).
        dir: PathBuf,
    },
    /// Print the completion script for a shell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `qaloop outbox …`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List notifications, newest first.
    List {
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<crate::store::OutboxStatus>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Re-queue a dead (or failed) notification for immediate sending.
    Retry {
        /// Outbox row id.
        id: i64,
        /// The moment of the retry [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
}

/// `qaloop notify …`
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test message to a person through each configured channel and report each result.
    Test {
        /// Staff id of the recipient.
        #[arg(long, value_name = "STAFF_ID")]
        to: String,
        /// Only this channel.
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
    },
}

/// `qaloop staff …`
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Import HR's staff CSV: add, update, and mark missing people as leavers. All or nothing.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The moment of the import [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
}

/// Which assignments to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    /// Not yet done.
    Open,
    /// Open and past due.
    Overdue,
    /// Completed.
    Done,
    /// Withdrawn.
    Cancelled,
    /// Everything.
    All,
}

/// `qaloop assignments …`
#[derive(Debug, Subcommand)]
pub enum AssignmentsCommand {
    /// List assignments.
    List {
        /// Which statuses.
        #[arg(long, value_enum, default_value_t = StatusFilter::Open)]
        status: StatusFilter,
        /// Only work held by this person (including work owned by roles they hold).
        #[arg(long, value_name = "STAFF_ID")]
        person: Option<String>,
        /// Only this activity.
        #[arg(long, value_name = "ID")]
        activity: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The moment overdue is judged at [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Mark an assignment done.
    Complete {
        /// Assignment id.
        id: i64,
        /// Staff id of the person completing it.
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// A short note (no case details or names).
        #[arg(long)]
        note: Option<String>,
        /// The moment of completion [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Move an open assignment to someone else (QA admins and managers above the assignee).
    Reassign {
        /// Assignment id.
        id: i64,
        /// Staff id of the new assignee.
        #[arg(long, value_name = "STAFF_ID")]
        to: String,
        /// Staff id of the person making the change.
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// The moment of the change [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Withdraw an open assignment (QA admins only).
    Cancel {
        /// Assignment id.
        id: i64,
        /// Staff id of the person cancelling.
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// The moment of the change [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Show an assignment and the record completing it stored (audit, moderation).
    Show {
        /// Assignment id.
        id: i64,
        /// Output format (`table` and `csv` print `key: value` lines).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show an assignment's history: every change, who and when.
    History {
        /// Assignment id.
        id: i64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// A command's failure, carrying its exit code.
#[derive(Debug)]
pub struct Failure {
    /// sysexits code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// Standard output was closed by its reader: stop quietly, exit 0.
    pub(crate) fn closed_pipe() -> Self {
        Self::new(exit::OK, "")
    }
    fn config(problems: Problems) -> Self {
        Self::new(exit::CONFIG, problems.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::new(exit::FAILURE, format!("{e:#}"))
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Self::new(exit::FAILURE, e.to_string())
    }
}

type Outcome = Result<(), Failure>;

/// Tokio worker threads of `serve` (see `main`).
const SERVE_WORKER_THREADS: usize = 2;

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // One rustls provider for the whole process, before anything opens a TLS connection.
    crate::notify::install_crypto_provider();
    // `serve` runs on two worker threads: a big morning's pass (rendering and sending some
    // thousands of messages over several lanes) uses a second core, and pages are served while
    // a pass runs. More would be resident memory (a stack, a malloc arena) an idle daemon
    // carries for nothing: two cost 0.2 MiB over one when idle (BENCHMARKS.md, "Idle serve").
    // SQLite runs on sqlx's own threads either way. The other commands keep a thread per core.
    let runtime = match cli.command {
        Command::Serve => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(SERVE_WORKER_THREADS);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        // The reader of our output went away: not an error (`| head`).
        Err(failure) if failure.code == exit::OK => ExitCode::from(exit::OK),
        Err(failure) => {
            // A closed stderr must not panic either.
            let _ = writeln!(std::io::stderr(), "error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn now_or_clock(now: Option<Timestamp>) -> Timestamp {
    now.unwrap_or_else(|| SystemClock.now())
}

struct Loaded {
    settings: Settings,
    ctx: Context,
}

fn load(cli_config: Option<&std::path::Path>, default_level: &str) -> Result<Loaded, Failure> {
    let path = resolve_path(cli_config);
    let settings = Settings::load(&path).map_err(|p| {
        crate::telemetry::init(LogFormat::Text, default_level);
        Failure::config(p)
    })?;
    crate::telemetry::init(settings.daemon.log_format, default_level);
    let ctx = load_context(&settings).map_err(Failure::config)?;
    Ok(Loaded { settings, ctx })
}

async fn open_store(settings: &Settings) -> Result<Store, Failure> {
    let store = Store::connect(&settings.database.url, settings.database.max_connections)
        .await
        .map_err(|e| Failure::new(exit::FAILURE, format!("opening database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::new(exit::FAILURE, format!("migrating database: {e}")))?;
    Ok(store)
}

async fn run(cli: Cli) -> Outcome {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Check { now } => check(config, now_or_clock(now)).await,
        Command::Migrate => {
            let loaded = load(config, "warn")?;
            let store = open_store(&loaded.settings).await?;
            out!("migrations applied ({})", store.backend_name());
            Ok(())
        }
        Command::Staff {
            command: StaffCommand::Import { file, now },
        } => staff_import(config, &file, now_or_clock(now)).await,
        Command::Plan { from, to, format } => plan(config, from, to, format),
        Command::Tick { now } => tick(config, now_or_clock(now)).await,
        Command::Assignments { command } => assignments(config, command).await,
        Command::Actions { command } => actions::run(config, command).await,
        Command::Concerns { command } => concerns::run(config, command).await,
        Command::Outbox { command } => outbox(config, command).await,
        Command::Notify {
            command: NotifyCommand::Test { to, channel },
        } => notify_test(config, &to, channel.as_deref()).await,
        Command::Generate { what } => generate(what),
        Command::Backup { path, now } => backup(config, &path, now_or_clock(now)).await,
        Command::Restore { path } => restore(config, &path).await,
        Command::Link {
            for_staff,
            item,
            concern,
            tracker,
            now,
        } => {
            let target = match (item, concern, tracker) {
                (Some(id), _, _) => LinkTarget::Item(id),
                (_, Some(id), _) => LinkTarget::Concern(id),
                (_, _, true) => LinkTarget::Tracker,
                _ => LinkTarget::MyWork,
            };
            link(config, &for_staff, target, now_or_clock(now)).await
        }
        Command::Serve => {
            let loaded = load(config, "info")?;
            crate::daemon::serve(
                loaded.settings,
                loaded.ctx,
                std::sync::Arc::new(SystemClock),
                crate::daemon::shutdown_signal(),
            )
            .await
            .map_err(|e| Failure::new(e.exit_code(), e.to_string()))
        }
    }
}

async fn check(config: Option<&std::path::Path>, now: Timestamp) -> Outcome {
    let path = resolve_path(config);
    crate::telemetry::init(LogFormat::Text, "warn");
    let mut problems = Problems::default();
    let mut findings = crate::ops::check::Findings::default();
    let runtime = match Settings::load(&path) {
        Err(p) => {
            // A broken settings file must not hide the other files' problems.
            problems.0.extend(p.0);
            problems
                .0
                .extend(crate::ops::check::inputs_without_settings(&path).0);
            None
        }
        Ok(settings) => {
            findings = crate::ops::check::environment(&settings).await;
            problems.0.extend(std::mem::take(&mut findings.problems).0);
            crate::ops::load::load_with(settings)
                .map_err(|p| problems.0.extend(p.0))
                .ok()
        }
    };
    let (Some(runtime), true) = (runtime, problems.is_empty()) else {
        let mut failure = Failure::config(problems);
        for warning in &findings.warnings {
            failure.message.push_str(&format!("\nwarning: {warning}"));
        }
        return Err(failure);
    };
    let crate::ops::load::Runtime {
        settings,
        ctx,
        staff,
        ..
    } = runtime;
    let today = ctx.today(now);
    let horizon = today
        .checked_add(jiff::Span::new().months(12))
        .expect("in range");
    let org = Org::from_records(staff.iter().cloned());
    let planned = plan_window(&ctx, &org, today, horizon);
    out!("configuration OK: {}", settings.source.display());
    out!(
        "organisation: {} ({})",
        settings.organisation.name,
        settings.organisation.timezone
    );
    out!(
        "schedule: {} activities ({})",
        ctx.schedule.activities.len(),
        settings.schedule.file.display()
    );
    out!(
        "staff: {} people ({})",
        staff.len(),
        settings.organisation.staff_file.display()
    );
    for (role, count) in org.role_counts() {
        out!("  {role:<24} {count}");
    }
    out!(
        "next 12 months ({today} to {horizon}): {} assignments",
        planned.len()
    );
    let mut per_activity = std::collections::BTreeMap::<&str, usize>::new();
    for a in &planned {
        *per_activity.entry(a.activity_id.as_str()).or_default() += 1;
    }
    for activity in &ctx.schedule.activities {
        let count = per_activity.get(activity.id.as_str()).copied().unwrap_or(0);
        let how = match activity.cadence {
            Some(c) => c.as_str().to_owned(),
            None => format!("after {}", activity.triggered_by.as_deref().unwrap_or("?")),
        };
        out!(
            "  {:<30} {:>5}  {how}, due {}",
            activity.id,
            count,
            activity.due.describe()
        );
    }
    for note in &findings.notes {
        out!("{note}");
    }
    for warning in findings.warnings.iter().cloned().chain(warnings(
        &ctx,
        &staff,
        today,
        horizon,
        &settings.calendar.bank_holidays_file,
    )) {
        out!("warning: {warning}");
    }
    Ok(())
}

fn generate(what: GenerateCommand) -> Outcome {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match what {
        GenerateCommand::Man { dir } => {
            let write = |name: String, page: clap::Command| -> Outcome {
                let path = dir.join(format!("{name}.8"));
                let mut file = std::fs::File::create(&path).map_err(|e| {
                    Failure::new(
                        exit::FAILURE,
                        format!("cannot create {}: {e}", path.display()),
                    )
                })?;
                clap_mangen::Man::new(page)
                    .section("8")
                    .render(&mut file)
                    .map_err(|e| {
                        Failure::new(exit::FAILURE, format!("writing {}: {e}", path.display()))
                    })
            };
            std::fs::create_dir_all(&dir).map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            cmd.build();
            for sub in cmd
                .get_subcommands()
                .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            {
                let name = format!("qaloop-{}", sub.get_name());
                // clap names are `&'static str` without its `string` feature; this runs once.
                let title: &'static str = Box::leak(name.clone().into_boxed_str());
                write(name, sub.clone().name(title))?;
            }
            write("qaloop".into(), cmd)?;
            out!("man pages written to {}", dir.display());
            Ok(())
        }
        GenerateCommand::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "qaloop", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf).trim_end());
            Ok(())
        }
    }
}

async fn backup(
    config: Option<&std::path::Path>,
    path: &std::path::Path,
    now: Timestamp,
) -> Outcome {
    use crate::ops::backup::BackupError;
    let loaded = load(config, "warn")?;
    let fail = |e: BackupError| Failure::new(e.exit_code(), e.to_string());
    if crate::config::sqlite_file(&loaded.settings.database.url).is_none() {
        return Err(fail(BackupError::Postgres));
    }
    let store = open_store(&loaded.settings).await?;
    let bytes = crate::ops::backup::backup(&store, path, now)
        .await
        .map_err(fail)?;
    out!(
        "backup written to {} ({bytes} bytes); integrity check ok",
        path.display()
    );
    Ok(())
}

async fn restore(config: Option<&std::path::Path>, path: &std::path::Path) -> Outcome {
    use crate::ops::backup::BackupError;
    let loaded = load(config, "warn")?;
    let fail = |e: BackupError| Failure::new(e.exit_code(), e.to_string());
    let Some((db, _)) = crate::config::sqlite_file(&loaded.settings.database.url) else {
        return Err(fail(BackupError::Postgres));
    };
    // Held until the restore is done: no serve can start on a half-replaced file.
    let _lock = crate::daemon::lock_sqlite(&loaded.settings.database.url).map_err(|e| match e {
        crate::daemon::ServeError::AlreadyRunning(_) => fail(BackupError::Running(format!(
            "{e}; stop it first (systemctl stop qaloop), restore, then start it"
        ))),
        other => Failure::new(other.exit_code(), other.to_string()),
    })?;
    crate::ops::backup::restore(path, std::path::Path::new(db))
        .await
        .map_err(fail)?;
    out!(
        "restored {} from {}; integrity check ok. Start qaloop: migrations, if any, run at start",
        db,
        path.display()
    );
    Ok(())
}

async fn staff_import(
    config: Option<&std::path::Path>,
    file: &std::path::Path,
    now: Timestamp,
) -> Outcome {
    let loaded = load(config, "warn")?;
    let staff = load_staff(file, &loaded.ctx.schedule)
        .map_err(|p| Failure::new(exit::DATAERR, format!("{p}\nnothing was imported")))?;
    let store = open_store(&loaded.settings).await?;
    let today = loaded.ctx.today(now);
    let report = import_staff(
        &store,
        &loaded.ctx,
        &staff.records,
        "system:staff-import",
        today,
        now,
    )
    .await?;
    if file == loaded.settings.organisation.staff_file {
        store
            .set_meta(crate::pass::STAFF_DIGEST_KEY, &staff.digest)
            .await?;
    }
    out!(
        "imported {} people: {} joined, {} changed, {} left, {} rejoined, {} assignments reassigned",
        staff.records.len(),
        report.joined.len(),
        report.changed.len(),
        report.left.len(),
        report.rejoined.len(),
        report.reassigned.len()
    );
    for (id, from, to) in &report.reassigned {
        out!("  assignment {id}: {from} -> {to}");
    }
    Ok(())
}

fn plan(config: Option<&std::path::Path>, from: Date, to: Date, format: Format) -> Outcome {
    if to < from {
        return Err(Failure::new(exit::USAGE, "--to is before --from"));
    }
    let loaded = load(config, "warn")?;
    let staff = load_staff(
        &loaded.settings.organisation.staff_file,
        &loaded.ctx.schedule,
    )
    .map_err(|p| Failure::new(exit::DATAERR, p.to_string()))?;
    let org = Org::from_records(staff.records);
    let rows: Vec<PlanView> = plan_window(&loaded.ctx, &org, from, to)
        .iter()
        .map(PlanView::from)
        .collect();
    print(
        &rows,
        format,
        &[
            "activity",
            "period",
            "period_start",
            "period_end",
            "assignee",
            "due",
        ],
    )?;
    Ok(())
}

async fn tick(config: Option<&std::path::Path>, now: Timestamp) -> Outcome {
    let loaded = load(config, "warn")?;
    let store = open_store(&loaded.settings).await?;
    let dispatcher = crate::notify::registry::build_dispatcher(&loaded.settings, &loaded.ctx)
        .map_err(Failure::config)?;
    let report = crate::pass::run_pass(
        &store,
        &loaded.settings,
        &loaded.ctx,
        dispatcher.as_ref(),
        now,
    )
    .await
    .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    if let Some(problems) = &report.staff_problems {
        let _ = writeln!(
            std::io::stderr(),
            "staff file not imported (the current staff list stays):\n{problems}"
        );
    }
    if let Some(staff) = &report.staff {
        out!(
            "staff: {} joined, {} changed, {} left, {} assignments reassigned",
            staff.joined.len(),
            staff.changed.len(),
            staff.left.len(),
            staff.reassigned.len()
        );
    }
    let r = &report.reconcile;
    out!(
        "tick at {now}: created {} assignments ({} late)",
        r.created,
        r.created_late
    );
    for (activity, period, count) in &r.periods {
        out!("  {activity} {period}: {count}");
    }
    if report.notices.queued > 0 {
        let mode = if report.notices.catch_up {
            " (catch-up summaries)"
        } else {
            ""
        };
        out!("notifications: {} queued{mode}", report.notices.queued);
    }
    if let Some(d) = &report.dispatch {
        out!("sent {}, retrying {}, dead {}", d.sent, d.retrying, d.dead);
    }
    Ok(())
}

/// The exit code and message for a refused or failed change to an assignment.
fn change_failure(error: CompleteError) -> Failure {
    let code = match &error {
        CompleteError::Refused(Refusal::NotAllowed { .. } | Refusal::OwnWork { .. }) => {
            exit::NOPERM
        }
        CompleteError::Refused(Refusal::UnknownPerson(_)) => exit::DATAERR,
        _ => exit::FAILURE,
    };
    Failure::new(code, error.to_string())
}

async fn assignments(config: Option<&std::path::Path>, command: AssignmentsCommand) -> Outcome {
    let loaded = load(config, "warn")?;
    let store = open_store(&loaded.settings).await?;
    let ctx = &loaded.ctx;
    match command {
        AssignmentsCommand::List {
            status,
            person,
            activity,
            format,
            now,
        } => {
            let today = ctx.today(now_or_clock(now));
            let mut filter = AssignmentFilter {
                activity_id: activity,
                ..Default::default()
            };
            match status {
                StatusFilter::Open => filter.statuses = vec![Status::Open],
                StatusFilter::Overdue => filter.overdue_on = Some(today),
                StatusFilter::Done => filter.statuses = vec![Status::Done],
                StatusFilter::Cancelled => filter.statuses = vec![Status::Cancelled],
                StatusFilter::All => {}
            }
            if let Some(person) = person {
                let org = Org::new(store.people().await?);
                let Some(p) = org.get(&person) else {
                    return Err(Failure::new(
                        exit::DATAERR,
                        format!("no member of staff has id `{person}`"),
                    ));
                };
                filter.assignees = std::iter::once(Assignee::person(&person))
                    .chain(p.record.roles.iter().map(Assignee::role))
                    .collect();
            }
            let rows: Vec<AssignmentView> = store
                .assignments(&filter)
                .await?
                .iter()
                .map(|a| AssignmentView::new(a, today))
                .collect();
            print(
                &rows,
                format,
                &[
                    "id",
                    "activity",
                    "period",
                    "assignee",
                    "subject",
                    "due",
                    "status",
                    "overdue",
                    "before_go_live",
                ],
            )?;
            Ok(())
        }
        AssignmentsCommand::Complete { id, by, note, now } => {
            let actor = Actor::new(&by, Via::Cli);
            let (a, triggered) =
                complete(&store, ctx, id, &actor, note.as_deref(), now_or_clock(now))
                    .await
                    .map_err(change_failure)?;
            out!(
                "assignment {} ({} {}) completed by {by}",
                a.id,
                a.activity_id,
                a.period_label
            );
            for t in triggered {
                out!("  created assignment {t}");
            }
            Ok(())
        }
        AssignmentsCommand::Reassign { id, to, by, now } => {
            let actor = Actor::new(&by, Via::Cli);
            reassign(&store, ctx, id, &to, &actor, now_or_clock(now))
                .await
                .map_err(change_failure)?;
            out!("assignment {id} reassigned to {to}");
            Ok(())
        }
        AssignmentsCommand::Cancel {
            id,
            by,
            reason,
            now,
        } => {
            let actor = Actor::new(&by, Via::Cli);
            cancel(&store, ctx, id, &actor, &reason, now_or_clock(now))
                .await
                .map_err(change_failure)?;
            out!("assignment {id} cancelled");
            Ok(())
        }
        AssignmentsCommand::Show { id, format } => show(&store, id, format).await,
        AssignmentsCommand::History { id, format } => {
            store.assignment(id).await?;
            let rows = store.history(id).await?;
            print(&rows, format, &["at", "event", "actor", "via", "detail"])?;
            Ok(())
        }
    }
}

/// `qaloop assignments show ID`: the assignment, its record and any moderation of it.
async fn show(store: &Store, id: i64, format: Format) -> Outcome {
    let assignment = match store.assignment(id).await {
        Ok(a) => a,
        Err(crate::store::StoreError::NotFound(id)) => {
            return Err(Failure::new(
                exit::DATAERR,
                format!("no assignment has id {id}"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let record = store.record(id).await?;
    let moderation = store.moderation_outcomes(id).await?;
    if let Format::Json = format {
        let value = serde_json::json!({
            "assignment": assignment,
            "record": record,
            "moderation": moderation,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    println!("id: {}", assignment.id);
    println!("activity: {}", assignment.activity_id);
    println!("period: {}", assignment.period_label);
    println!("assignee: {}", assignment.assignee);
    println!("due: {}", assignment.due);
    println!("status: {}", assignment.status.as_str());
    if let (Some(at), Some(by)) = (assignment.completed_at, &assignment.completed_by) {
        println!("completed: {at} by {by}");
    }
    match &record {
        None => println!("record: none"),
        Some(r) => {
            println!(
                "record: {} (by {} via {})",
                r.form_id, r.submitted_by, r.via
            );
            if let Some(fields) = r.fields.as_object() {
                for (key, value) in fields {
                    match value {
                        serde_json::Value::String(text) => println!("  {key}: {text}"),
                        other => println!("  {key}: {other}"),
                    }
                }
            }
        }
    }
    for o in &moderation {
        match (&o.agreed, &o.moderated_grade) {
            (true, _) => println!("moderation {}: {} agreed", o.moderation_id, o.field),
            (false, g) => println!(
                "moderation {}: {} {} -> {}",
                o.moderation_id,
                o.field,
                o.audit_grade,
                g.as_deref().unwrap_or("?")
            ),
        }
    }
    Ok(())
}

/// What `qaloop link` makes a link to.
#[derive(Debug, Clone, Copy)]
enum LinkTarget {
    /// One assignment.
    Item(i64),
    /// One urgent concern.
    Concern(i64),
    /// The closing-the-loop tracker.
    Tracker,
    /// The person's own work page.
    MyWork,
}

/// `qaloop link --for STAFF_ID [--item ID | --concern ID | --tracker]`: a signed link, for
/// trying the pages or for the QA team to send by hand.
async fn link(
    config: Option<&std::path::Path>,
    staff_id: &str,
    target: LinkTarget,
    now: Timestamp,
) -> Outcome {
    let loaded = load(config, "warn")?;
    let keys = crate::inputs::link_keys(&loaded.settings)
        .map_err(Failure::config)?
        .ok_or_else(|| {
            Failure::new(
                exit::CONFIG,
                format!(
                    "{}: web.link_key_file: not set; links cannot be signed",
                    loaded.settings.source.display()
                ),
            )
        })?;
    let store = open_store(&loaded.settings).await?;
    let people = store.people_by_id(&[staff_id]).await?;
    if !people.iter().any(|p| p.is_current()) {
        return Err(Failure::new(
            exit::DATAERR,
            format!("`{staff_id}` is not a current member of staff"),
        ));
    }
    let base = loaded.settings.notify.base_url.trim_end_matches('/');
    let not_found = |what: &'static str| {
        move |e: crate::store::StoreError| match e {
            crate::store::StoreError::NotFound(id) => {
                Failure::new(exit::DATAERR, format!("no {what} has id {id}"))
            }
            e => e.into(),
        }
    };
    use crate::links::Purpose;
    let url = match target {
        LinkTarget::Item(id) => {
            store
                .assignment(id)
                .await
                .map_err(not_found("assignment"))?;
            let token = keys.sign_from(staff_id, Purpose::Item, Some(id), now);
            format!("{base}/a/{id}?t={token}")
        }
        LinkTarget::Concern(id) => {
            store.concern(id).await.map_err(not_found("concern"))?;
            let token = keys.sign_from(staff_id, Purpose::Concern, Some(id), now);
            format!("{base}/concerns/{id}?t={token}")
        }
        LinkTarget::Tracker => {
            let token = keys.sign_from(staff_id, Purpose::Tracker, None, now);
            format!("{base}/tracker?t={token}")
        }
        LinkTarget::MyWork => {
            let token = keys.sign_from(staff_id, Purpose::MyWork, None, now);
            format!("{base}/me?t={token}")
        }
    };
    println!("{url}");
    Ok(())
}

async fn outbox(config: Option<&std::path::Path>, command: OutboxCommand) -> Outcome {
    let loaded = load(config, "warn")?;
    let store = open_store(&loaded.settings).await?;
    match command {
        OutboxCommand::List {
            status,
            limit,
            format,
        } => {
            let rows = store.outbox(status, limit).await?;
            print(
                &rows,
                format,
                &[
                    "id",
                    "status",
                    "kind",
                    "channel",
                    "recipient",
                    "assignment_id",
                    "attempts",
                    "not_before",
                    "last_error",
                ],
            )?;
            Ok(())
        }
        OutboxCommand::Retry { id, now } => {
            if store.retry(id, now_or_clock(now)).await? {
                out!("outbox row {id} re-queued; the daemon (or `qaloop tick`) will send it");
                Ok(())
            } else {
                match store.outbox_row(id).await? {
                    None => Err(Failure::new(
                        exit::DATAERR,
                        format!("no outbox row has id {id}"),
                    )),
                    Some(row) => Err(Failure::new(
                        exit::FAILURE,
                        format!(
                            "outbox row {id} is {}; only dead or failed rows can be retried",
                            row.status.as_str()
                        ),
                    )),
                }
            }
        }
    }
}

async fn notify_test(config: Option<&std::path::Path>, to: &str, channel: Option<&str>) -> Outcome {
    let loaded = load(config, "warn")?;
    let Some(dispatcher) = crate::notify::registry::build_dispatcher(&loaded.settings, &loaded.ctx)
        .map_err(Failure::config)?
    else {
        return Err(Failure::new(exit::CONFIG, "no [[channels]] are configured"));
    };
    let store = open_store(&loaded.settings).await?;
    let org = Org::new(store.people().await?);
    let Some(person) = org.get(to).filter(|p| p.is_current()) else {
        return Err(Failure::new(
            exit::DATAERR,
            format!("`{to}` is not a current member of staff (import the staff file first)"),
        ));
    };
    let now = SystemClock.now();
    let mut context = crate::notify::context::TemplateContext::new(crate::notify::Kind::Test);
    context.organisation = loaded.settings.organisation.name.clone();
    context.base_url = loaded
        .settings
        .notify
        .base_url
        .trim_end_matches('/')
        .to_owned();
    context.recipient = to.to_owned();
    context.today = loaded.ctx.today(now).to_string();
    let recipient = crate::notify::Recipient {
        staff_id: to.to_owned(),
        email: Some(person.record.email.clone()),
        chat_id: person.record.chat_id.clone(),
    };
    let results = dispatcher
        .send_test(recipient, &context, channel, now)
        .await
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let mut failed = 0;
    for (name, outcome) in &results {
        match outcome {
            Ok(()) => out!("{name}: sent"),
            Err(e) => {
                failed += 1;
                out!("{name}: {e}");
            }
        }
    }
    if failed > 0 {
        Err(Failure::new(
            exit::FAILURE,
            format!("{failed} of {} channels failed", results.len()),
        ))
    } else {
        Ok(())
    }
}
