//! Wake-ups across processes on PostgreSQL: `LISTEN qaloop_wake`.
//!
//! Triggers made by `migrations/postgres/0011_wake.sql` send `NOTIFY qaloop_wake` with the
//! table's schema as payload whenever a statement inserts outbox rows, records a concern or
//! acknowledges one — in the writer's transaction, so the notice arrives only once it commits,
//! whoever wrote (another `serve` node, a CLI command, a page). [`Store::listen_for_writes`]
//! holds a connection of its own listening on that channel and tells the daemon's loop, which
//! then looks at the concerns and the outbox at once instead of at its next timed wake-up.
//! (On SQLite the loop `stat`s the database file and its WAL instead: one machine, one file.)
//! A node hears its own writes too — its pages write through the same pool as its passes, so
//! they cannot be told apart by session — which costs one extra look after each of its passes.
//!
//! If the listening connection fails, the loop is told the listener is down — it then looks at
//! every timed wake-up, as it did before there was a listener — and the connection is tried
//! again after 1 s, 2 s, … up to a minute; the loss and the return are logged once each.
//!
//! **Invariant:** never fatal: a listener that cannot connect delays wake-ups, it never stops
//! the daemon; and a notice is a hint to look, never a fact (the loop reads the database).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Backend, Store};

/// The channel the triggers notify and the listener listens on.
pub const CHANNEL: &str = "qaloop_wake";

/// The longest wait between attempts to reconnect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the listener has heard, shared between its task and the daemon's loop.
#[derive(Debug, Clone)]
pub struct Wakes {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Wakes the loop: `notify_one` keeps a permit, so a notice that comes while the loop is
    /// busy wakes its next wait at once instead of being lost.
    notify: Notify,
    /// A write was heard since the loop last asked ([`Wakes::take`]).
    heard: AtomicBool,
    /// The listener is connected and listening; while not, the loop must look at every wake.
    listening: AtomicBool,
}

impl Wakes {
    /// Completes when a write by any process was heard (or the listener came back, so writes
    /// may have been missed) since the last call; at once if one already was.
    pub async fn notified(&self) {
        self.shared.notify.notified().await;
    }

    /// Whether the loop should look at the database now: a write was heard since the last
    /// call, or the listener is down (writes cannot be heard). Clears what was heard.
    pub fn take(&self) -> bool {
        let heard = self.shared.heard.swap(false, Ordering::AcqRel);
        heard || !self.listening()
    }

    /// Whether the listener is connected and listening.
    pub fn listening(&self) -> bool {
        self.shared.listening.load(Ordering::Acquire)
    }

    fn wake(&self) {
        self.shared.heard.store(true, Ordering::Release);
        self.shared.notify.notify_one();
    }
}

impl Store {
    /// On PostgreSQL, the wake-ups from other processes' writes and the task that listens for
    /// them (run it until `cancel`); `None` on SQLite.
    pub fn listen_for_writes(
        &self,
        cancel: CancellationToken,
    ) -> Option<(Wakes, impl Future<Output = ()> + Send + 'static)> {
        let Backend::Postgres(pool) = &self.backend else {
            return None;
        };
        let options = (*pool.connect_options()).clone();
        let wakes = Wakes {
            shared: Arc::new(Shared::default()),
        };
        Some((wakes.clone(), listen(options, wakes, cancel)))
    }
}

/// Listens until `cancel`, reconnecting with a growing wait when the connection fails.
async fn listen(options: PgConnectOptions, wakes: Wakes, cancel: CancellationToken) {
    let mut failures: u32 = 0;
    let mut lost_logged = false;
    loop {
        let cause = tokio::select! {
            () = cancel.cancelled() => return,
            cause = listen_once(&options, &wakes, &mut failures, &mut lost_logged) => cause,
        };
        wakes.shared.listening.store(false, Ordering::Release);
        if !lost_logged {
            tracing::warn!(
                error = %cause,
                "not listening for other processes' writes (PostgreSQL LISTEN {CHANNEL}): \
                 looking at the database at every timed wake-up until the connection is back"
            );
            lost_logged = true;
        } else {
            tracing::debug!(error = %cause, "listener: still no connection");
        }
        failures = failures.saturating_add(1);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff(failures)) => {}
        }
    }
}

/// One connection's life: connects, listens, and passes notices for this schema on until the
/// connection fails. Returns why it ended.
async fn listen_once(
    options: &PgConnectOptions,
    wakes: &Wakes,
    failures: &mut u32,
    lost_logged: &mut bool,
) -> sqlx::Error {
    // A pool of one of its own: the listener holds its connection for good, which must not
    // take one from the pool the work uses. sqlx's own reconnect is off (`eager_reconnect`):
    // a lost connection comes back here, to be logged and retried with a backoff.
    let pool = match PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => pool,
        Err(e) => return e,
    };
    let cause = async {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut listener)
            .await?;
        wakes.shared.listening.store(true, Ordering::Release);
        if std::mem::take(lost_logged) {
            tracing::info!("listening for other processes' writes again (PostgreSQL LISTEN {CHANNEL})");
        } else {
            tracing::info!(schema = %schema, "listening for other processes' writes (PostgreSQL LISTEN {CHANNEL})");
        }
        *failures = 0;
        // Writes made while nobody listened were not heard: look once now.
        wakes.wake();
        loop {
            match listener.try_recv().await? {
                Some(notice) if notice.payload() == schema => wakes.wake(),
                // Another schema on the same database (another qaloop, or a test).
                Some(_) => {}
                None => {
                    return Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the listening connection was lost",
                    )));
                }
            }
        }
    }
    .await;
    let cause = match cause {
        Ok(()) => unreachable!("the listen loop only ends with an error"),
        Err(e) => e,
    };
    pool.close().await;
    cause
}

/// The wait before reconnect attempt `failures`: 1 s, 2 s, 4 s, … up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_after_a_wait_that_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[tokio::test]
    async fn a_heard_write_is_taken_once_and_a_down_listener_always_says_look() {
        let wakes = Wakes {
            shared: Arc::new(Shared::default()),
        };
        assert!(wakes.take(), "not listening yet: look at every wake");
        wakes.shared.listening.store(true, Ordering::Release);
        assert!(!wakes.take(), "listening, nothing heard");
        wakes.wake();
        // The permit is kept: a wake while the loop was busy is not lost.
        tokio::time::timeout(Duration::from_secs(5), wakes.notified())
            .await
            .expect("woken");
        assert!(wakes.take());
        assert!(!wakes.take(), "taken once");
    }
}
