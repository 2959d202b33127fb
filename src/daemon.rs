//! `qaloop serve`: the daemon.
//!
//! tokio-cron-scheduler is only a trigger: a job every minute (in UTC, so its DST bugs cannot
//! bite) wakes the main loop, and [`Triggers`] decides, from the organisation's local wall
//! clock, whether a pass is due. A fallback timer wakes the loop too, so a scheduler that stops
//! ticking (its issue #113) delays nothing by more than a few minutes. All truth — periods, what
//! exists — lives in the database; catch-up, DST and duplicates are the engine's job.
//!
//! **Invariant:** passes run one at a time, in the main loop; a shutdown signal is only acted on
//! between passes, so the pass in flight always finishes.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Zoned;
use jiff::civil::{Date, Time};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::calendar::Calendar;
use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::Context;
use crate::pass::run_pass;
use crate::store::Store;

/// How long the loop waits for the scheduler before checking the clock itself.
const FALLBACK_WAKE: Duration = Duration::from_secs(90);

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
fn lock_sqlite(url: &str) -> Result<Option<File>, ServeError> {
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

/// Runs the daemon until `shutdown` completes: a catch-up pass at start, then passes whenever
/// [`Triggers`] says, and whenever the staff file changes.
pub async fn serve(
    settings: Settings,
    ctx: Context,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let dispatcher =
        crate::notify::registry::build_dispatcher(&settings, &ctx).map_err(ServeError::Config)?;
    let _lock = lock_sqlite(&settings.database.url)?;
    let store = Store::connect(&settings.database.url, settings.database.max_connections).await?;
    store.migrate().await?;
    tracing::info!(backend = store.backend_name(), "qaloop serve starting");
    let web = start_web(&settings, &ctx, &store, clock.clone()).await?;

    let pass = |label: &'static str| {
        let (store, settings, ctx, clock, dispatcher) =
            (&store, &settings, &ctx, &clock, dispatcher.as_ref());
        async move {
            let now = clock.now();
            match run_pass(store, settings, ctx, dispatcher, now).await {
                Ok(report) => tracing::info!(
                    trigger = label,
                    created = report.reconcile.created,
                    late = report.reconcile.created_late,
                    queued = report.notices.queued,
                    sent = report.dispatch.as_ref().map_or(0, |d| d.sent),
                    "pass complete"
                ),
                Err(e) => {
                    tracing::error!(trigger = label, error = %e, "pass failed; will retry at the next trigger")
                }
            }
        }
    };
    pass("start").await;

    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let mut scheduler = JobScheduler::new().await?;
    scheduler
        .add(Job::new_async("0 * * * * *", move |_id, _lock| {
            let wake = wake_tx.clone();
            Box::pin(async move {
                let _ = wake.try_send(());
            })
        })?)
        .await?;
    scheduler.start().await?;

    let mut triggers = Triggers::new(
        settings.daemon.every_minutes,
        settings.daily_times(),
        &clock.now().to_zoned(ctx.tz.clone()),
    );
    let mut staff_mtime = modified(&settings.organisation.staff_file);
    tokio::pin!(shutdown);
    loop {
        let label = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(()) = wake_rx.recv() => "schedule",
            _ = tokio::time::sleep(FALLBACK_WAKE) => {
                tracing::debug!("no wake-up from the scheduler; checking the clock");
                "fallback"
            }
        };
        let now = clock.now().to_zoned(ctx.tz.clone());
        let mtime = modified(&settings.organisation.staff_file);
        if triggers.due(&now, &ctx.calendar) {
            pass(label).await;
            staff_mtime = mtime;
        } else if mtime != staff_mtime {
            staff_mtime = mtime;
            pass("staff-file").await;
        } else if let Some(dispatcher) = &dispatcher {
            // Between passes: send what working hours released and what is due a retry.
            if let Err(e) = dispatcher.dispatch(&store, now.timestamp()).await {
                tracing::error!(error = %e, "dispatch failed; will retry at the next wake-up");
            }
        }
    }
    tracing::info!("shutting down");
    let _ = scheduler.shutdown().await;
    if let Some((stop, task)) = web {
        stop.cancel();
        let _ = task.await;
    }
    store.close().await;
    Ok(())
}

/// Binds `[web] listen` and serves the pages in a task until the returned token is cancelled;
/// `None` when no link key is configured (links cannot be signed, so there are no pages).
async fn start_web(
    settings: &Settings,
    ctx: &Context,
    store: &Store,
    clock: Arc<dyn Clock>,
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
    });
    let app = crate::web::app(state, settings.web.max_body_bytes);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, app, stopped.cancelled_owned()).await {
            tracing::error!(error = %e, "web server stopped");
        }
    });
    tracing::info!(
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
