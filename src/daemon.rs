//! `qaloop serve`: the daemon.
//!
//! tokio-cron-scheduler is only a trigger: a job every minute (in UTC, so its DST bugs cannot
//! bite) wakes the main loop, and [`Triggers`] decides, from the organisation's local wall
//! clock, whether a pass is due. A fallback timer wakes the loop too, so a scheduler that stops
//! ticking (its issue #113) delays nothing by more than a few minutes. All truth — periods, what
//! exists — lives in the database; catch-up, DST and duplicates are the engine's job.
//!
//! Around that: systemd notifications and the watchdog (`ops::systemd`), SIGHUP reloads
//! (all or nothing), the ops listener, nightly backups, and on PostgreSQL a leader lease so
//! only one node runs passes. Between passes the loop dispatches only when something is due or
//! another process wrote (SQLite: the file changed; PostgreSQL: `NOTIFY qaloop_wake`).
//!
//! **Invariant:** passes run one at a time, in the main loop; a shutdown signal lets the pass or
//! dispatch in flight finish (up to `SHUTDOWN_GRACE`, 60 s, inside the unit's `TimeoutStopSec`);
//! past that it is dropped and its claimed rows are sent again once their lease runs out.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Zoned;
use jiff::civil::{Date, Time};
use tokio::sync::mpsc;
use tokio_cron_scheduler::Job;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::calendar::Calendar;
use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::Context;
use crate::ops::http::{Facts, OpsState};
use crate::ops::load::{describe_channels, describe_database};
use crate::ops::systemd;
use crate::ops::vitals::{LastPass, Vitals};
use crate::pass::run_pass;
use crate::store::Store;
use crate::store::lease::{Leadership, Lease};
use crate::store::wake::Wakes;

/// How long the loop waits for the scheduler before checking the clock itself.
const FALLBACK_WAKE: Duration = Duration::from_secs(90);

/// How often an idle loop looks at the outbox even when nothing it knows of is due: writes by
/// other processes that went unnoticed (a listening connection dead without an error, a row
/// re-queued by `qaloop outbox retry` on PostgreSQL) are acted on within this.
const IDLE_RECHECK: Duration = Duration::from_secs(5 * 60);

/// When the loop next needs to dispatch: the earliest moment a queued message becomes
/// sendable, read after every pass and dispatch. Between those, wake-ups cost no query.
#[derive(Debug)]
struct SendClock {
    /// The earliest sendable moment known; `None`: the queue was empty.
    next: Option<jiff::Timestamp>,
    /// When the outbox was last looked at.
    checked: std::time::Instant,
    /// Looks at the outbox that failed in a row (the database is unreachable): the next look
    /// waits [`failure_backoff`] of this, so an outage is not retried and logged every second.
    failures: u32,
}

impl SendClock {
    /// Whether to dispatch at `now`: something is due, or the last look is old.
    fn due(&self, now: jiff::Timestamp) -> bool {
        dispatch_due(self.next, now, self.checked.elapsed())
    }

    /// Reads the next sendable moment at `now` (a queued message, or an urgent concern's next
    /// alert round); on error, dispatches again after a backoff that doubles from 2 s to a
    /// minute while the errors last.
    async fn refresh(&mut self, store: &Store, live: &Live, now: jiff::Timestamp) {
        let next = async {
            let send = store.next_send_at().await?;
            let alert =
                crate::notify::urgent::next_alert_at(store, &live.ctx, &live.settings.urgent, now)
                    .await?;
            Ok::<_, crate::store::StoreError>(send.into_iter().chain(alert).min())
        };
        self.next = match next.await {
            Ok(next) => {
                self.failures = 0;
                next
            }
            Err(_) => {
                self.failures = self.failures.saturating_add(1);
                Some(
                    now.saturating_add(failure_backoff(self.failures))
                        .unwrap_or(now),
                )
            }
        };
        self.checked = std::time::Instant::now();
    }

    /// How long the loop may sleep before the next known send (at least a second).
    fn until_next(&self, now: jiff::Timestamp) -> Option<Duration> {
        let next = self.next?;
        let wait = now.duration_until(next);
        Some(
            Duration::try_from(wait)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
        )
    }
}

/// tokio-cron-scheduler's every-minute UTC job, driven by the loop's own timer: the loop asks
/// the job when it next fires and sleeps until then. The crate's own ticker (`JobScheduler::
/// start`) is not run: it wakes every 500 ms whether or not a job is due, which was most of an
/// idle daemon's CPU (BENCHMARKS.md, "Idle serve").
struct CronWake {
    /// The job; its closure is never called (no scheduler runs it), only its cron is used.
    job: Job,
}

impl CronWake {
    /// `0 * * * * *` in UTC: the start of every minute (UTC, so the crate's DST bug cannot
    /// bite; [`Triggers`] decides in local time whether a pass is due).
    fn every_minute() -> Result<Self, ServeError> {
        let mut job = Job::new("0 * * * * *", |_, _| {})?;
        // The crate's first tick only records "last ticked now"; from then on `tick` answers
        // whether the next minute has come.
        let _ = job.tick();
        Ok(Self { job })
    }

    /// How long until the job's next minute, by the system clock; `None` if it has none.
    fn until_next(&mut self) -> Option<Duration> {
        let next = self.job.job_data().ok()?.next_tick;
        if next == 0 {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?;
        // A few milliseconds late rather than early: the job fires from its second on.
        Some(
            Duration::from_secs(next)
                .saturating_sub(now)
                .saturating_add(Duration::from_millis(5)),
        )
    }

    /// Whether the job's minute has come (and moves it on to the next).
    fn fired(&mut self) -> bool {
        self.job.tick().unwrap_or(false)
    }
}

/// Notices writes by other processes (`qaloop assignments complete`, `concerns raise`, another
/// node) and by the pages between passes, without a query. On SQLite every commit changes the
/// database's WAL file (or the file itself), so a `stat` of both says whether to look at the
/// outbox and the concerns. On PostgreSQL the writers' transactions send `NOTIFY qaloop_wake`
/// (`store::wake`), which also wakes the loop at once; while that listener is down, the loop
/// looks at every wake-up.
struct DbWatch {
    /// The database file and its WAL; empty on PostgreSQL.
    files: Vec<PathBuf>,
    /// Their (modified time, length) at the last look.
    seen: Vec<Option<(SystemTime, u64)>>,
    /// On PostgreSQL, what the listener heard.
    wakes: Option<Wakes>,
}

impl DbWatch {
    fn new(url: &str, wakes: Option<Wakes>) -> Self {
        let files: Vec<PathBuf> = crate::config::sqlite_file(url)
            .map(|(path, _)| vec![PathBuf::from(&path), PathBuf::from(format!("{path}-wal"))])
            .unwrap_or_default();
        let mut watch = Self {
            seen: Vec::new(),
            files,
            wakes,
        };
        watch.seen();
        watch
    }

    /// Completes when the listener hears a write (never on SQLite, where the loop's timer
    /// and the `stat` above do the work).
    async fn notified(&self) {
        match &self.wakes {
            Some(wakes) => wakes.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Each file's (modified time, length); `None` for a missing or empty file, which say the
    /// same: an emptied WAL (see [`DbWatch::settle`]) and one removed when the pool's last
    /// connection closed are one state, so that close is not taken for a write.
    fn state(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.files
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .filter(|m| m.len() > 0)
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Whether the database changed since [`DbWatch::seen`]. On PostgreSQL: whether a write was
    /// heard since the last call (which clears it), or the listener is down or absent.
    fn changed(&self) -> bool {
        match &self.wakes {
            Some(wakes) => wakes.take(),
            None => self.files.is_empty() || self.state() != self.seen,
        }
    }

    /// Marks the current state as looked at.
    fn seen(&mut self) {
        self.seen = self.state();
    }

    /// After a pass or a look at the outbox: empties SQLite's WAL into the database file
    /// ([`Store::checkpoint`]), then marks the state as looked at. Without the checkpoint the
    /// pool's idle connections closing a minute later would rewrite both files, the next
    /// wake-up would take that for another process's write and open the database to look, and
    /// the idle daemon would do so every other minute.
    async fn settle(&mut self, store: &Store) {
        if !self.files.is_empty()
            && let Err(e) = store.checkpoint().await
        {
            tracing::debug!(error = %e, "WAL checkpoint after a pass failed; the next look settles it");
        }
        self.seen();
    }
}

/// How long to wait before looking at the outbox again after `failures` failed looks in a row:
/// 2 s, 4 s, … up to a minute. (Before: every wake-up, about once a second, each logged.)
fn failure_backoff(failures: u32) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs((1i64 << failures.clamp(1, 6)).min(60))
}

/// The rule of [`SendClock::due`], pure for testing.
fn dispatch_due(
    next: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    since_check: Duration,
) -> bool {
    next.is_some_and(|t| t <= now) || since_check >= IDLE_RECHECK
}

/// On PostgreSQL, how often a follower checks whether the leader is gone.
const LEASE_CHECK: Duration = Duration::from_secs(20);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another `serve` holds the SQLite database.
    #[error(
        "another qaloop serve is already using {0}; stop it first (SQLite has one writer; use PostgreSQL to run several)"
    )]
    AlreadyRunning(PathBuf),
    /// The lock file could not be created.
    #[error("cannot create lock file {0}: {1}")]
    LockFile(PathBuf, std::io::Error),
    /// The database could not be opened.
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The trigger could not be set up.
    #[error("scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
    /// Channels or templates are misconfigured.
    #[error("{0}")]
    Config(crate::problem::Problems),
    /// The pages could not listen on `[web] listen`.
    #[error("cannot listen on {0} ([web] listen): {1}")]
    Listen(String, std::io::Error),
}

impl ServeError {
    /// The process exit code for this error (sysexits).
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::AlreadyRunning(_) => 75, // EX_TEMPFAIL: try again once the other stops
            ServeError::LockFile(..) => 73,      // EX_CANTCREAT
            ServeError::Config(_) => 78,         // EX_CONFIG
            _ => 1,
        }
    }
}

/// Decides when a pass is due, from local wall-clock time: every `every_minutes` on the clock,
/// and at each `daily_at` time on working days. Compares civil times, never offsets, so a clock
/// change neither skips nor doubles a daily pass.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// Interval in minutes (0: off).
    every_minutes: u32,
    /// Local times on working days.
    daily_at: Vec<Time>,
    /// The interval slot last run: (local date, slot number within the day).
    last_interval: Option<(Date, u32)>,
    /// The local date each daily time last ran on.
    last_daily: HashMap<Time, Date>,
}

impl Triggers {
    /// Triggers that consider everything up to `now` already done (a pass runs at start).
    pub fn new(every_minutes: u32, daily_at: Vec<Time>, now: &Zoned) -> Self {
        let mut t = Self {
            every_minutes,
            daily_at,
            last_interval: None,
            last_daily: HashMap::new(),
        };
        t.last_interval = t.interval_slot(now);
        for time in t.daily_at.clone() {
            if now.time() >= time {
                t.last_daily.insert(time, now.date());
            }
        }
        t
    }

    fn interval_slot(&self, now: &Zoned) -> Option<(Date, u32)> {
        if self.every_minutes == 0 {
            return None;
        }
        let minutes =
            u32::try_from(i32::from(now.hour()) * 60 + i32::from(now.minute())).unwrap_or(0);
        Some((now.date(), minutes / self.every_minutes))
    }

    /// The first moment after `now` at which [`Triggers::due`] would say yes (within 31 days).
    pub fn next_after(&self, now: &Zoned, calendar: &Calendar) -> Option<Zoned> {
        let tz = now.time_zone().clone();
        let mut best: Option<Zoned> = None;
        let mut consider = |candidate: Zoned| {
            if candidate > *now && best.as_ref().is_none_or(|b| candidate < *b) {
                best = Some(candidate);
            }
        };
        if let Some((date, slot)) = self.interval_slot(now) {
            let minutes = i64::from((slot + 1) * self.every_minutes);
            let start = date.to_zoned(tz.clone()).ok()?;
            if let Ok(next) = start.checked_add(jiff::Span::new().minutes(minutes)) {
                consider(next);
            }
        }
        let mut day = now.date();
        for _ in 0..31 {
            if calendar.is_working_day(day) {
                for time in &self.daily_at {
                    if self.last_daily.get(time) != Some(&day)
                        && let Ok(at) = day.to_datetime(*time).to_zoned(tz.clone())
                    {
                        consider(at);
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        best
    }

    /// Whether a pass is due at `now`; records it as run if so.
    pub fn due(&mut self, now: &Zoned, calendar: &Calendar) -> bool {
        let mut due = false;
        let slot = self.interval_slot(now);
        if slot.is_some() && slot != self.last_interval {
            self.last_interval = slot;
            due = true;
        }
        if calendar.is_working_day(now.date()) {
            for time in &self.daily_at {
                if now.time() >= *time && self.last_daily.get(time) != Some(&now.date()) {
                    self.last_daily.insert(*time, now.date());
                    due = true;
                }
            }
        }
        due
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled, so a signal during start-up is not lost (nor fatal).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Takes the single-instance lock for a SQLite database: a lock file beside it, held for the
/// process's life. `None` for PostgreSQL, where several instances may run.
pub fn lock_sqlite(url: &str) -> Result<Option<File>, ServeError> {
    let Some((path, _)) = crate::config::sqlite_file(url) else {
        return Ok(None);
    };
    let lock_path = PathBuf::from(format!("{path}.lock"));
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ServeError::LockFile(lock_path.clone(), e))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ServeError::LockFile(lock_path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(ServeError::AlreadyRunning(PathBuf::from(path)))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(ServeError::LockFile(lock_path, e)),
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What the loop runs on: swapped whole by a successful reload.
struct Live {
    settings: Settings,
    ctx: Context,
    dispatcher: Option<crate::notify::dispatcher::Dispatcher>,
}

/// Runs the daemon until `shutdown` completes: a catch-up pass at start, then passes whenever
/// [`Triggers`] says, and whenever the staff file changes. SIGHUP reloads the configuration
/// (see `reload`); systemd hears `READY=1` once the first pass is done, `STATUS=` after each
/// pass, and `WATCHDOG=1` while the loop and the database are alive.
pub async fn serve(
    settings: Settings,
    ctx: Context,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut hangup = hangup_signal();
    let dispatcher =
        crate::notify::registry::build_dispatcher(&settings, &ctx).map_err(ServeError::Config)?;
    let _lock = lock_sqlite(&settings.database.url)?;
    let store = Store::connect(&settings.database.url, settings.database.max_connections).await?;
    store.migrate().await?;
    let vitals = Arc::new(Vitals::default());
    vitals.db_answered();
    let ops_state = OpsState {
        store: store.clone(),
        vitals: vitals.clone(),
        clock: clock.clone(),
        facts: Arc::new(std::sync::RwLock::new(Facts::new(&settings, &ctx))),
    };
    // The pages answer before the first pass, so a link in an old message works at once; so
    // do /healthz, /readyz (not ready until the first pass) and /metrics on their listener.
    let on_web = settings.ops.on_web.then(|| ops_state.clone());
    let web = start_web(&settings, &ctx, &store, clock.clone(), on_web).await?;
    let mut live = Live {
        settings,
        ctx,
        dispatcher,
    };

    let watchdog = systemd::watchdog_interval();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    if let Some(interval) = watchdog {
        tasks.spawn(systemd::watchdog(
            store.clone(),
            vitals.clone(),
            interval,
            cancel.clone(),
        ));
    }
    // On PostgreSQL, other processes' writes wake the loop at once (`store::wake`). Started
    // before the first pass, so nothing written during it goes unheard.
    let wakes = store
        .listen_for_writes(cancel.clone())
        .map(|(wakes, listener)| {
            tasks.spawn(listener);
            wakes
        });
    // The loop must wake well inside the watchdog interval even when nothing is due, and, on
    // PostgreSQL, often enough for a follower to take over from a dead leader quickly.
    let mut fallback = watchdog.map_or(FALLBACK_WAKE, |w| FALLBACK_WAKE.min(w / 3));
    if store.backend_name() == "postgres" {
        fallback = fallback.min(LEASE_CHECK);
    }

    let mut triggers = Triggers::new(
        live.settings.daemon.every_minutes,
        live.settings.daily_times(),
        &clock.now().to_zoned(live.ctx.tz.clone()),
    );
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %live.settings.source.display(),
        database = %describe_database(&live.settings.database.url),
        channels = %describe_channels(&live.settings.channels),
        watchdog_s = watchdog.map(|w| w.as_secs_f64()),
        next_trigger = %describe_next(&triggers, &clock.now().to_zoned(live.ctx.tz.clone()), &live.ctx.calendar),
        "qaloop serve starting"
    );

    tokio::pin!(shutdown);
    let mut lease = store.lease();
    if lead(&mut lease, &vitals).await.leads()
        && finish_or_stop(
            run_one(&live, &store, clock.as_ref(), &vitals, "start"),
            shutdown.as_mut(),
        )
        .await
    {
        lease.release().await;
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        store.close().await;
        return Ok(());
    }

    let listen = live.settings.ops.listen_addr().map_err(|message| {
        ServeError::Config(
            crate::problem::Problem::new(&live.settings.source, "ops.listen", message).into(),
        )
    })?;
    // Health and metrics are for watching the work, not the work itself: a port in use is an
    // error in the log (and `qaloop check` warns of it), not a reason to stop assigning.
    match listen.map(crate::ops::http::bind) {
        None => {}
        Some(bind) => match bind.await {
            Ok(listener) => {
                tracing::info!(
                    address = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
                    "ops listener: /healthz /readyz /metrics"
                );
                let cancel = cancel.clone();
                tasks.spawn(crate::ops::http::serve(
                    listener,
                    ops_state.clone(),
                    async move { cancel.cancelled().await },
                ));
            }
            Err(e) => tracing::error!(error = %e, "running without /healthz and /metrics"),
        },
    }
    systemd::ready(&status_line(&store, &vitals).await);

    let mut cron = CronWake::every_minute()?;
    let mut sends = SendClock {
        next: None,
        checked: std::time::Instant::now(),
        failures: 0,
    };
    sends.refresh(&store, &live, clock.now()).await;
    let mut writes = DbWatch::new(&live.settings.database.url, wakes);
    writes.settle(&store).await;
    let mut nightly = nightly_backup(&live.settings, &clock.now().to_zoned(live.ctx.tz.clone()));
    let mut staff_mtime = modified(&live.settings.organisation.staff_file);
    // Memory the pool's connections held (SQLite's page caches, freed when idle connections
    // close a minute after the last use) is given back once they have all closed; that is
    // also when the daemon is idle, so the code pages the work ran are handed back with it.
    let mut trim_when_closed = true;
    loop {
        // One timer: the cron job's next minute, the next sendable message or alert round,
        // or the fallback, whichever comes first; and on PostgreSQL a write by another
        // process. Nothing else wakes an idle daemon.
        let sleep = [cron.until_next(), sends.until_next(clock.now())]
            .into_iter()
            .flatten()
            .fold(fallback, Duration::min);
        let label = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(()) = hangup.recv() => "reload",
            () = writes.notified() => "write",
            _ = tokio::time::sleep(sleep) => {
                if cron.fired() { "schedule" } else { "timer" }
            }
        };
        vitals.tick();
        if trim_when_closed && store.open_connections() == 0 {
            crate::ops::memory::release_idle();
            trim_when_closed = false;
        }
        if label == "reload" {
            if reload(&mut live) {
                ops_state.set_facts(Facts::new(&live.settings, &live.ctx));
                triggers = Triggers::new(
                    live.settings.daemon.every_minutes,
                    live.settings.daily_times(),
                    &clock.now().to_zoned(live.ctx.tz.clone()),
                );
                staff_mtime = modified(&live.settings.organisation.staff_file);
                nightly =
                    nightly_backup(&live.settings, &clock.now().to_zoned(live.ctx.tz.clone()));
                if lead(&mut lease, &vitals).await.leads() {
                    let work = run_one(&live, &store, clock.as_ref(), &vitals, "reload");
                    if finish_or_stop(work, shutdown.as_mut()).await {
                        break;
                    }
                }
            }
            systemd::ready(&status_line(&store, &vitals).await);
            trim_when_closed = true;
            continue;
        }
        let now = clock.now().to_zoned(live.ctx.tz.clone());
        if let Some(nightly) = nightly.as_mut()
            && nightly.due(&now)
        {
            vitals.busy(true);
            match nightly.run(&store, &now).await {
                Ok(file) => {
                    tracing::info!(file = %file.display(), "nightly backup written and checked")
                }
                Err(e) => {
                    tracing::error!(error = %e, "nightly backup failed; will try again tomorrow")
                }
            }
            vitals.busy(false);
        }
        let mtime = modified(&live.settings.organisation.staff_file);
        let role = lead(&mut lease, &vitals).await;
        let due = triggers.due(&now, &live.ctx.calendar);
        if role == Leadership::Acquired || (due && role.leads()) {
            let label = if role == Leadership::Acquired {
                "takeover"
            } else {
                label
            };
            let work = run_one(&live, &store, clock.as_ref(), &vitals, label);
            if finish_or_stop(work, shutdown.as_mut()).await {
                break;
            }
            staff_mtime = mtime;
            sends.refresh(&store, &live, clock.now()).await;
            writes.settle(&store).await;
            trim_when_closed = true;
            systemd::status(&status_line(&store, &vitals).await);
        } else if mtime != staff_mtime && role.leads() {
            staff_mtime = mtime;
            let work = run_one(&live, &store, clock.as_ref(), &vitals, "staff-file");
            if finish_or_stop(work, shutdown.as_mut()).await {
                break;
            }
            sends.refresh(&store, &live, clock.now()).await;
            writes.settle(&store).await;
            trim_when_closed = true;
            systemd::status(&status_line(&store, &vitals).await);
        } else if sends.due(now.timestamp()) || writes.changed() {
            // Between passes, only when something can be sent (or an alert round fell due),
            // or another process (or a page) wrote to the database since the last look:
            // urgent alerts that fell due, then what is ready — urgent alerts at any hour,
            // what working hours released, what is due a retry. An idle wake reads nothing.
            vitals.busy(true);
            let send_due = sends.due(now.timestamp());
            let work = async {
                match crate::pass::between_passes(
                    &store,
                    &live.settings,
                    &live.ctx,
                    live.dispatcher.as_ref(),
                    now.timestamp(),
                    send_due,
                )
                .instrument(tracing::info_span!("dispatch", trigger = label))
                .await
                {
                    Ok(_) => vitals.db_answered(),
                    Err(e) => {
                        let url = &live.settings.database.url;
                        tracing::error!(
                            database = %describe_database(url),
                            error = %with_cause(&e, url),
                            "dispatch failed; will retry at the next wake-up"
                        )
                    }
                }
            };
            let stopping = finish_or_stop(work, shutdown.as_mut()).await;
            crate::ops::memory::release_freed();
            vitals.busy(false);
            if stopping {
                break;
            }
            sends.refresh(&store, &live, clock.now()).await;
            writes.settle(&store).await;
            trim_when_closed = true;
        }
    }
    systemd::stopping();
    tracing::info!("shutting down");
    lease.release().await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    if let Some((stop, task)) = web {
        stop.cancel();
        let _ = task.await;
    }
    store.close().await;
    Ok(())
}

/// How long a pass or dispatch in flight may go on after SIGTERM: inside the unit's
/// `TimeoutStopSec=90s`, longer than one SMTP timeout (30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Runs `work` to the end, unless `shutdown` completes first: then `work` gets
/// [`SHUTDOWN_GRACE`] to finish (sends in flight complete and are recorded) before it is
/// dropped. A dropped dispatch loses nothing: its claimed rows are sent again once their lease
/// runs out, at most once more each. Returns whether shutdown was asked for; `shutdown` is not
/// polled again after it completed.
async fn finish_or_stop(
    work: impl Future<Output = ()>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::pin!(work);
    tokio::select! {
        biased;
        () = &mut work => false,
        () = &mut shutdown => {
            systemd::stopping();
            tracing::info!(grace_s = SHUTDOWN_GRACE.as_secs(), "stopping: letting the work in flight finish");
            if tokio::time::timeout(SHUTDOWN_GRACE, work).await.is_err() {
                tracing::warn!("stopping: work in flight cut short; unrecorded sends go again after their lease");
            }
            true
        }
    }
}

/// Checks leadership (always held on SQLite) and logs changes.
async fn lead(lease: &mut Lease, vitals: &Vitals) -> Leadership {
    let role = lease.check().await;
    match role {
        Leadership::Acquired => {
            tracing::info!("this node leads (PostgreSQL advisory lock): it runs the passes")
        }
        Leadership::Lost => tracing::warn!(
            "lost the leadership (its lock connection failed): another node runs the passes"
        ),
        Leadership::Leader | Leadership::Follower => {}
    }
    if vitals.set_leader(role.leads()) && !role.leads() {
        tracing::info!("another node leads: this one only sends messages");
    }
    role
}

/// One pass at the clock's `now`, recorded in `vitals`; a failure is logged, not fatal.
async fn run_one(
    live: &Live,
    store: &Store,
    clock: &dyn Clock,
    vitals: &Vitals,
    label: &'static str,
) {
    let now = clock.now();
    let started = std::time::Instant::now();
    vitals.busy(true);
    let span = tracing::info_span!("pass", trigger = label, at = %now);
    let result = run_pass(
        store,
        &live.settings,
        &live.ctx,
        live.dispatcher.as_ref(),
        now,
    )
    .instrument(span.clone())
    .await;
    vitals.busy(false);
    let _entered = span.enter();
    let ok = result.is_ok();
    let mut error = None;
    match result {
        Ok(report) => {
            vitals.db_answered();
            tracing::info!(
                created = report.reconcile.created,
                late = report.reconcile.created_late,
                queued = report.notices.queued,
                sent = report.dispatch.as_ref().map_or(0, |d| d.sent),
                duration_ms = started.elapsed().as_millis() as u64,
                "pass complete"
            )
        }
        Err(e) => {
            // A failed pass on SQLite is most often a file it could not write: what was opened
            // meanwhile is opened afresh for the next (`Store::saw_unwritable`).
            store.saw_unwritable();
            let message = with_cause(&e, &live.settings.database.url);
            tracing::error!(
                database = %describe_database(&live.settings.database.url),
                error = %message,
                "pass failed; will retry at the next trigger"
            );
            error = Some(message);
        }
    }
    crate::ops::metrics::record_pass(started.elapsed().as_secs_f64(), ok);
    // What the pass read is garbage now; give it back before the loop sleeps.
    crate::ops::memory::release_freed();
    vitals.pass_finished(LastPass {
        at: now,
        finished: std::time::Instant::now(),
        duration: started.elapsed(),
        ok,
        error,
    });
}

/// `error`, and when the database is a SQLite file that cannot be written, which file or
/// folder and why: SQLite itself names neither ("disk I/O error", "readonly database").
fn with_cause(error: &dyn std::fmt::Display, url: &str) -> String {
    match crate::ops::check::sqlite_unwritable(url) {
        Some(why) => format!("{error}: {why}"),
        None => error.to_string(),
    }
}

/// The `STATUS=` line: when the last pass ran and how many messages wait.
async fn status_line(store: &Store, vitals: &Vitals) -> String {
    let pass = match vitals.last_pass() {
        Some(p) if p.ok => format!(
            "last pass {}",
            p.at.round(jiff::Unit::Second).unwrap_or(p.at)
        ),
        Some(p) => format!(
            "last pass FAILED at {}",
            p.at.round(jiff::Unit::Second).unwrap_or(p.at)
        ),
        None => "no pass yet".into(),
    };
    match store.outbox_depth().await {
        Ok(n) => format!("{pass}; outbox: {n} waiting"),
        Err(_) => format!("{pass}; outbox: database not answering"),
    }
}

/// Reloads the configuration from the file the running one came from, with the same checks as
/// `qaloop check`. All or nothing: on any problem every one is logged at error level and the
/// running configuration stays. Returns whether the new one took over. `database.url` cannot
/// change without a restart (the lock and the pool belong to the old database).
fn reload(live: &mut Live) -> bool {
    systemd::reloading();
    let path = live.settings.source.clone();
    tracing::info!(config = %path.display(), "SIGHUP: reloading configuration");
    match crate::ops::load::load_checked(&path) {
        Ok(new) => {
            if new.settings.ops.listen != live.settings.ops.listen {
                tracing::warn!(
                    "ops.listen changed: the listener stays where it is until qaloop restarts"
                );
            }
            if new.settings.database.url != live.settings.database.url {
                tracing::error!(
                    "reload refused: database.url changed; restart qaloop to move to another database (keeping the running configuration)"
                );
                return false;
            }
            tracing::info!(
                config = %path.display(),
                activities = new.ctx.schedule.activities.len(),
                staff = new.staff.len(),
                channels = %describe_channels(&new.settings.channels),
                "configuration reloaded"
            );
            *live = Live {
                settings: new.settings,
                ctx: new.ctx,
                dispatcher: new.dispatcher,
            };
            true
        }
        Err(problems) => {
            for problem in &problems.0 {
                tracing::error!(%problem, "reload refused");
            }
            tracing::error!(
                problems = problems.0.len(),
                "reload refused: keeping the running configuration; fix the problems above and send SIGHUP again"
            );
            false
        }
    }
}

/// The nightly backup `[backup]` asks for; none on PostgreSQL (logged: use `pg_dump`).
fn nightly_backup(settings: &Settings, now: &Zoned) -> Option<crate::ops::backup::Nightly> {
    let nightly = crate::ops::backup::Nightly::from_settings(settings, now)?;
    if crate::config::sqlite_file(&settings.database.url).is_none() {
        tracing::warn!(
            "[backup] dir is set but the database is PostgreSQL: back it up with pg_dump (see README, Operations)"
        );
        return None;
    }
    Some(nightly)
}

/// Yields once per SIGHUP. Installed when called, so from then on SIGHUP never kills the
/// process (its default action would).
fn hangup_signal() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// The next moment [`Triggers`] will fire after `now`, for the start-up line.
fn describe_next(triggers: &Triggers, now: &Zoned, calendar: &Calendar) -> String {
    triggers.next_after(now, calendar).map_or_else(
        || "none".into(),
        |z| z.strftime("%Y-%m-%dT%H:%M %Z").to_string(),
    )
}

/// Binds `[web] listen` and serves the pages in a task until the returned token is cancelled;
/// `None` when no link key is configured (links cannot be signed, so there are no pages).
async fn start_web(
    settings: &Settings,
    ctx: &Context,
    store: &Store,
    clock: Arc<dyn Clock>,
    ops: Option<OpsState>,
) -> Result<
    Option<(
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    )>,
    ServeError,
> {
    let Some(keys) = crate::inputs::link_keys(settings).map_err(ServeError::Config)? else {
        tracing::info!("no [web] link_key_file: pages are off");
        return Ok(None);
    };
    let pages = crate::web::templates::load(settings.web.templates_dir.as_deref())
        .map_err(ServeError::Config)?;
    let listener = tokio::net::TcpListener::bind(&settings.web.listen)
        .await
        .map_err(|e| ServeError::Listen(settings.web.listen.clone(), e))?;
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let state = Arc::new(crate::web::AppState {
        store: store.clone(),
        ctx: Arc::new(ctx.clone()),
        keys,
        clock,
        pages,
        organisation: settings.organisation.name.clone(),
        urgent: settings.urgent.clone(),
    });
    let mut app = crate::web::app(state, settings.web.max_body_bytes);
    // `[ops] on_web`: the same /healthz, /readyz and /metrics as `[ops] listen`.
    let health = ops.is_some();
    if let Some(ops) = ops {
        app = app.merge(crate::ops::http::routes(ops));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, app, stopped.cancelled_owned()).await {
            tracing::error!(error = %e, "web server stopped");
        }
    });
    tracing::info!(
        health_and_metrics = health,
        "pages on http://{address}/ (open a link from a message, or `qaloop link --for STAFF_ID`)"
    );
    Ok(Some((stop, task)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};

    fn at(text: &str) -> Zoned {
        text.parse().unwrap()
    }

    #[test]
    fn hourly_and_daily_triggers_across_the_spring_clock_change() {
        let cal = Calendar::weekdays_only();
        // Friday 26 March 2027, 23:10 London; clocks go forward on Sunday 28 March.
        let mut t = Triggers::new(
            60,
            vec![time(7, 30, 0, 0)],
            &at("2027-03-26T23:10[Europe/London]"),
        );
        assert!(!t.due(&at("2027-03-26T23:40[Europe/London]"), &cal));
        assert!(t.due(&at("2027-03-27T00:00[Europe/London]"), &cal));
        // Saturday: no 07:30 pass, but hourly ones.
        assert!(t.due(&at("2027-03-27T07:30[Europe/London]"), &cal));
        assert!(!t.due(&at("2027-03-27T07:45[Europe/London]"), &cal));
        // Monday 29 March 07:30 BST fires once, not again at 07:31.
        assert!(t.due(&at("2027-03-29T07:00[Europe/London]"), &cal));
        assert!(t.due(&at("2027-03-29T07:30[Europe/London]"), &cal));
        assert!(!t.due(&at("2027-03-29T07:31[Europe/London]"), &cal));
        assert_eq!(
            t.last_daily.get(&time(7, 30, 0, 0)),
            Some(&date(2027, 3, 29))
        );
    }

    #[test]
    fn an_idle_loop_dispatches_only_when_something_is_due_or_its_last_look_is_old() {
        let now: jiff::Timestamp = "2027-06-15T09:00:00Z".parse().unwrap();
        let later: jiff::Timestamp = "2027-06-15T09:30:00Z".parse().unwrap();
        let minute = Duration::from_secs(60);
        assert!(!dispatch_due(None, now, minute), "empty queue");
        assert!(!dispatch_due(Some(later), now, minute), "held until later");
        assert!(dispatch_due(Some(now), now, minute), "due now");
        assert!(
            dispatch_due(None, now, IDLE_RECHECK),
            "look again now and then"
        );
        let clock = SendClock {
            next: Some(later),
            checked: std::time::Instant::now(),
            failures: 0,
        };
        assert_eq!(clock.until_next(now), Some(Duration::from_secs(1800)));
        assert_eq!(clock.until_next(later), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_cron_job_says_when_the_next_minute_starts_and_fires_only_then() {
        let mut cron = CronWake::every_minute().unwrap();
        let wait = cron.until_next().expect("a next tick");
        assert!(wait <= Duration::from_millis(60_005), "{wait:?}");
        // Unless the test started within 5 ms of a minute's end, the minute has not come.
        if wait > Duration::from_millis(50) {
            assert!(!cron.fired(), "fired {wait:?} before its minute");
        }
    }

    #[test]
    fn a_write_to_the_sqlite_file_or_its_wal_is_noticed_by_stat_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        std::fs::write(&db, b"x").unwrap();
        let mut watch = DbWatch::new(&format!("sqlite://{}", db.display()), None);
        assert!(!watch.changed(), "nothing written yet");
        std::fs::write(dir.path().join("q.db-wal"), b"frame").unwrap();
        assert!(watch.changed(), "a new WAL frame is a change");
        watch.seen();
        assert!(!watch.changed());
        // PostgreSQL has no file to watch: without its listener, every wake looks.
        assert!(DbWatch::new("postgres://localhost/db", None).changed());
    }

    #[tokio::test]
    async fn the_pool_closing_its_connections_after_a_settled_look_is_not_taken_for_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let write = |store: Store| async move {
            store.migrate().await.unwrap();
            store.set_meta("probe", "1").await.unwrap();
            store
        };

        // Unsettled: closing checkpoints the WAL into the file and removes it, which the
        // `stat`s see as a change (the idle daemon used to open the database for it).
        let store = write(Store::connect(&url, 2).await.unwrap()).await;
        let mut watch = DbWatch::new(&url, None);
        store.close().await;
        assert!(
            watch.changed(),
            "closing without a checkpoint rewrites the files"
        );

        // Settled: the WAL was emptied first, and the close changes nothing watched.
        let store = write(Store::connect(&url, 2).await.unwrap()).await;
        watch.settle(&store).await;
        assert!(!watch.changed());
        store.close().await;
        assert!(
            !watch.changed(),
            "the close after a checkpoint is not a write"
        );

        // Another process's write after that is still seen.
        let other = Store::connect(&url, 1).await.unwrap();
        other.set_meta("probe", "2").await.unwrap();
        assert!(
            watch.changed(),
            "a write after the settled look is a change"
        );
        other.close().await;
        assert!(watch.changed());
    }

    #[test]
    fn an_unreachable_outbox_is_looked_at_again_after_a_growing_wait_of_at_most_a_minute() {
        let waits: Vec<i64> = (1..=8).map(|n| failure_backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[tokio::test]
    async fn work_in_flight_finishes_when_shutdown_comes_and_runs_on_without_it() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // No shutdown: the work runs to its end.
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        assert!(!finish_or_stop(async {}, never.as_mut()).await);

        // Shutdown already asked for: the work in flight still finishes (within the grace).
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let work = {
            let done = done.clone();
            async move {
                let _ = rx.await;
                done.store(true, Ordering::SeqCst);
            }
        };
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(());
        });
        let now = std::future::ready(());
        tokio::pin!(now);
        assert!(finish_or_stop(work, now.as_mut()).await);
        assert!(
            done.load(Ordering::SeqCst),
            "the work in flight was cut short"
        );
    }

    #[test]
    fn a_missed_daily_time_fires_at_the_next_wake_the_same_day() {
        let cal = Calendar::weekdays_only();
        let mut t = Triggers::new(
            0,
            vec![time(7, 30, 0, 0)],
            &at("2027-10-29T06:00[Europe/London]"),
        );
        assert!(!t.due(&at("2027-10-29T07:29[Europe/London]"), &cal));
        assert!(t.due(&at("2027-10-29T09:02[Europe/London]"), &cal));
        // After the autumn change (31 Oct), Monday 1 November at 07:30 GMT.
        assert!(t.due(&at("2027-11-01T07:30[Europe/London]"), &cal));
    }
}
