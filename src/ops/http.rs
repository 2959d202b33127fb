//! The operations HTTP surface: [`routes`] builds an `axum::Router` with `/healthz`, `/readyz`
//! and `/metrics` over an [`OpsState`], so it can be mounted on any listener (the web pages'
//! one, once it exists); until then `serve` runs it on its own, `[ops] listen`.
//!
//! **Invariant:** read-only: handlers query aggregates and liveness facts, never write.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::Context;
use crate::store::Store;

use super::vitals::Vitals;

/// What the handlers need: shared, cheap to clone.
#[derive(Clone)]
pub struct OpsState {
    /// The database, for `SELECT 1` and aggregates.
    pub store: Store,
    /// Liveness facts from the main loop.
    pub vitals: Arc<Vitals>,
    /// The clock readiness is judged by (the daemon's; a `FixedClock` in tests).
    pub clock: Arc<dyn Clock>,
    /// Configuration facts, replaced on reload.
    pub facts: Arc<RwLock<Facts>>,
}

/// The configuration the handlers read: activities and channels (so every series exists, at
/// zero if need be), the calendar (coverage) and readiness limits.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Schedule, calendar, zone.
    pub ctx: Context,
    /// Configured channel names.
    pub channels: Vec<String>,
    /// `/readyz` fails when the last pass is older than this.
    pub max_pass_age: Duration,
    /// `/readyz` fails when a message has waited this long past its send time.
    pub max_send_delay: Duration,
    /// The SQLite database's URL (`None` on PostgreSQL): `/readyz` fails while its file
    /// cannot be written (a read-only folder, mount or file).
    pub sqlite_url: Option<String>,
}

impl Facts {
    /// The facts of a configuration.
    pub fn new(settings: &Settings, ctx: &Context) -> Self {
        let every = settings.daemon.every_minutes;
        let max_pass_age = match settings.ops.ready_max_pass_age_minutes {
            Some(m) => Duration::from_secs(u64::from(m) * 60),
            None if every > 0 => Duration::from_secs(u64::from(every) * 3 * 60),
            None => Duration::from_secs(4 * 24 * 3600),
        };
        Self {
            ctx: ctx.clone(),
            channels: settings
                .channels
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            max_pass_age,
            max_send_delay: Duration::from_secs(
                u64::from(settings.ops.ready_max_send_delay_minutes) * 60,
            ),
            sqlite_url: crate::config::sqlite_file(&settings.database.url)
                .map(|_| settings.database.url.clone()),
        }
    }
}

impl OpsState {
    /// A copy of the current facts (the lock is never held across an await).
    pub fn facts(&self) -> Facts {
        self.facts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the facts (after a reload).
    pub fn set_facts(&self, facts: Facts) {
        *self
            .facts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = facts;
    }
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn routes(state: OpsState) -> axum::Router {
    super::health::routes()
        .merge(super::metrics::routes())
        .with_state(state)
}

/// Why the operations listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for /healthz and /metrics ([ops] listen): {source}")]
pub struct ListenError {
    /// The address.
    pub addr: SocketAddr,
    /// What the OS said.
    pub source: std::io::Error,
}

/// Binds `addr`; the caller serves on it with [`serve`] (binding first lets `READY=1` wait for
/// the bind, and lets tests ask for port 0).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ListenError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })
}

/// Serves [`routes`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: OpsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, routes(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "ops listener failed");
    }
}
