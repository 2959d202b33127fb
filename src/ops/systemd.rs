//! systemd integration through `sd_notify(3)` (the `sd-notify` crate): readiness, status lines,
//! reload and stop notices, and the watchdog. Every call is a no-op when `NOTIFY_SOCKET` is unset,
//! so the same binary runs in a terminal and in tests.
//!
//! **Invariant:** `WATCHDOG=1` is sent only when [`Vitals::not_alive`] says the main loop woke and
//! the database answered within the watchdog interval, so a hung loop or a lost database gets
//! the service restarted instead of pinged forever.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::vitals::Vitals;
use crate::store::Store;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// `READY=1` with a first status line: start-up is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=…`: shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` (with `MONOTONIC_USEC`, as `Type=notify-reload` requires).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(usec) => send(&[NotifyState::Reloading, usec]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec))
}

/// Runs the watchdog until `cancel`: every half interval, asks the database `SELECT 1` (bounded
/// by a quarter interval) and pings systemd only if the daemon is alive.
pub async fn watchdog(
    store: Store,
    vitals: Arc<Vitals>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval / 2);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match tokio::time::timeout(interval / 4, store.ping()).await {
            Ok(Ok(())) => vitals.db_answered(),
            Ok(Err(e)) => tracing::warn!(error = %e, "watchdog: the database did not answer"),
            Err(_) => tracing::warn!(
                timeout_ms = (interval / 4).as_millis() as u64,
                "watchdog: the database did not answer in time"
            ),
        }
        match vitals.not_alive(interval) {
            None => send(&[NotifyState::Watchdog]),
            Some(why) => tracing::error!(
                reason = %why,
                "watchdog: not alive, withholding WATCHDOG=1 (systemd will restart the service)"
            ),
        }
    }
}
