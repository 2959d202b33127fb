//! The daemon's liveness facts, written by the main loop and the watchdog task, read by the
//! watchdog, `STATUS=` lines and the readiness endpoint.
//!
//! Monotonic [`Instant`]s measure "how long ago" (immune to wall-clock jumps); wall-clock
//! [`Timestamp`]s are kept only to show people when something happened.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// What the last pass did, for `STATUS=` and `/readyz`.
#[derive(Debug, Clone)]
pub struct LastPass {
    /// The pass's `now` (injected clock): when it ran, as people read it.
    pub at: Timestamp,
    /// When it finished, on the monotonic clock.
    pub finished: Instant,
    /// How long it took.
    pub duration: Duration,
    /// Whether it completed without error.
    pub ok: bool,
    /// Why it failed, in the words logged (for `/readyz`).
    pub error: Option<String>,
}

/// Shared liveness state. `std::sync::Mutex`es, not Tokio ones: each is held for a copy, never
/// across an await.
#[derive(Debug)]
pub struct Vitals {
    /// When the main loop last woke (or started a pass).
    loop_tick: Mutex<Instant>,
    /// When a pass or dispatch began, while one is running: a long send is busy, not hung.
    busy_since: Mutex<Option<Instant>>,
    /// When the database last answered `SELECT 1`.
    db_ok: Mutex<Option<Instant>>,
    /// The last pass.
    last_pass: Mutex<Option<LastPass>>,
    /// Whether this node runs passes (always on SQLite; the lease holder on PostgreSQL).
    leader: Mutex<bool>,
}

impl Default for Vitals {
    fn default() -> Self {
        Self {
            loop_tick: Mutex::new(Instant::now()),
            busy_since: Mutex::new(None),
            db_ok: Mutex::new(None),
            last_pass: Mutex::new(None),
            leader: Mutex::new(true),
        }
    }
}

/// How long a single pass or dispatch may run before the loop counts as hung whatever the
/// watchdog interval: a slow mail relay can hold a dispatch for minutes, legitimately.
pub const MAX_BUSY: Duration = Duration::from_secs(15 * 60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Vitals {
    /// The main loop woke.
    pub fn tick(&self) {
        *lock(&self.loop_tick) = Instant::now();
    }

    /// A pass or dispatch starts (`true`) or ends (`false`).
    pub fn busy(&self, busy: bool) {
        self.tick();
        *lock(&self.busy_since) = busy.then(Instant::now);
    }

    /// The database answered.
    pub fn db_answered(&self) {
        *lock(&self.db_ok) = Some(Instant::now());
    }

    /// A pass finished.
    pub fn pass_finished(&self, pass: LastPass) {
        *lock(&self.last_pass) = Some(pass);
    }

    /// Records whether this node leads; returns whether that changed.
    pub fn set_leader(&self, leads: bool) -> bool {
        let mut leader = lock(&self.leader);
        let changed = *leader != leads;
        *leader = leads;
        changed
    }

    /// Whether this node runs passes.
    pub fn is_leader(&self) -> bool {
        *lock(&self.leader)
    }

    /// The last pass, if any ran.
    pub fn last_pass(&self) -> Option<LastPass> {
        lock(&self.last_pass).clone()
    }

    /// Why the daemon is not alive within `within`, or `None` when it is: the main loop woke
    /// (or is busy in a pass for less than [`MAX_BUSY`]) and the database answered, both within
    /// `within`.
    pub fn not_alive(&self, within: Duration) -> Option<String> {
        let now = Instant::now();
        let loop_age = now.duration_since(*lock(&self.loop_tick));
        let busy = lock(&self.busy_since).map(|since| now.duration_since(since));
        let loop_ok = match busy {
            Some(age) => age <= MAX_BUSY.max(within),
            None => loop_age <= within,
        };
        if !loop_ok {
            return Some(match busy {
                Some(age) => format!("a pass has been running for {} s", age.as_secs()),
                None => format!("the main loop last woke {} s ago", loop_age.as_secs()),
            });
        }
        match *lock(&self.db_ok) {
            Some(at) if now.duration_since(at) <= within => None,
            Some(at) => Some(format!(
                "the database last answered {} s ago",
                now.duration_since(at).as_secs()
            )),
            None => Some("the database has not answered yet".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_needs_both_a_recent_loop_tick_and_a_database_answer() {
        let v = Vitals::default();
        assert!(
            v.not_alive(Duration::from_secs(60)).is_some(),
            "no db answer yet"
        );
        v.db_answered();
        assert_eq!(v.not_alive(Duration::from_secs(60)), None);
        // Nothing is recent within zero time: both facts are stale.
        let why = v.not_alive(Duration::ZERO).unwrap();
        assert!(why.contains("main loop"), "{why}");
        v.busy(true);
        // Busy in a pass: the loop is not hung, but the database answer is still stale.
        let why = v.not_alive(Duration::ZERO).unwrap();
        assert!(why.contains("database"), "{why}");
    }
}
