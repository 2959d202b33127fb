//! The clock, read once at the edge and passed inward as a value.
//!
//! Commands take `--now` so a year can be replayed from outside; tests pin time with
//! [`FixedClock`]. Nothing below the CLI and the daemon calls [`Clock::now`].

use std::sync::Mutex;

use jiff::Timestamp;

/// A source of the current instant.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that says what it is told: for tests and replays.
#[derive(Debug)]
pub struct FixedClock {
    /// A `std::sync::Mutex`, not a Tokio one: it is held for a copy, never across an await.
    now: Mutex<Timestamp>,
}

impl FixedClock {
    /// A clock stopped at `now`.
    pub fn new(now: Timestamp) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: Timestamp) {
        *self.now.lock().expect("clock lock poisoned") = now;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock poisoned")
    }
}
