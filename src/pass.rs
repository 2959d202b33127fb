//! One pass of the daemon, also what `qaloop tick` runs: re-import the staff file if it changed,
//! then reconcile.

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Settings;
use crate::engine::{Context, ReconcileReport, import_staff, reconcile};
use crate::inputs::load_staff;
use crate::problem::Problems;
use crate::store::{StaffSyncReport, Store, StoreError};

/// The `meta` key holding the digest of the last staff file imported from configuration.
pub const STAFF_DIGEST_KEY: &str = "staff_file_sha256";

/// What a pass did.
#[derive(Debug, Default, Serialize)]
pub struct PassReport {
    /// The staff import, when the file had changed.
    pub staff: Option<StaffSyncReport>,
    /// Problems that stopped a changed staff file from being imported (the old list stays).
    #[serde(skip)]
    pub staff_problems: Option<Problems>,
    /// The reconcile.
    pub reconcile: ReconcileReport,
    /// Today's notification decision.
    pub notices: crate::notify::daily::DecisionReport,
    /// Urgent-concern alerts queued.
    pub urgent: u64,
    /// What was sent, when notifications are configured.
    pub dispatch: Option<crate::notify::dispatcher::DispatchReport>,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Re-imports the configured staff file when its content changed since the last import.
/// A bad file is reported and skipped: the daemon keeps running on the staff it knows.
pub async fn sync_staff_file(
    store: &Store,
    settings: &Settings,
    ctx: &Context,
    now: Timestamp,
) -> Result<(Option<StaffSyncReport>, Option<Problems>), StoreError> {
    let file = match load_staff(&settings.organisation.staff_file, &ctx.schedule) {
        Ok(file) => file,
        Err(problems) => return Ok((None, Some(problems))),
    };
    if store.meta(STAFF_DIGEST_KEY).await?.as_deref() == Some(file.digest.as_str()) {
        return Ok((None, None));
    }
    let report = import_staff(
        store,
        ctx,
        &file.records,
        "system:staff-file",
        ctx.today(now),
        now,
    )
    .await?;
    store.set_meta(STAFF_DIGEST_KEY, &file.digest).await?;
    Ok((Some(report), None))
}

/// Staff sync, reconcile, today's notices, then sending, at `now`.
pub async fn run_pass(
    store: &Store,
    settings: &Settings,
    ctx: &Context,
    dispatcher: Option<&crate::notify::dispatcher::Dispatcher>,
    now: Timestamp,
) -> Result<PassReport, PassError> {
    let (staff, staff_problems) = sync_staff_file(store, settings, ctx, now).await?;
    if let Some(problems) = &staff_problems {
        for problem in &problems.0 {
            tracing::error!(%problem, "staff file not imported; keeping the current staff list");
        }
    }
    if let Some(report) = &staff {
        tracing::info!(
            joined = report.joined.len(),
            changed = report.changed.len(),
            left = report.left.len(),
            reassigned = report.reassigned.len(),
            "staff file imported"
        );
    }
    let reconcile = reconcile(store, ctx, now).await?;
    let notices = crate::notify::daily::decide(store, ctx, now).await?;
    let urgent = crate::notify::urgent::decide(store, ctx, &settings.urgent, now).await?;
    let dispatch = match dispatcher {
        Some(d) => Some(d.dispatch(store, now).await?),
        None => None,
    };
    Ok(PassReport {
        staff,
        staff_problems,
        reconcile,
        notices,
        urgent,
        dispatch,
    })
}

/// What the daemon does at every wake-up between passes (once a minute): queue the urgent
/// alerts that fell due, then — when `send_due` (the daemon knows a queued message is
/// sendable) or urgent alerts were just queued — send what is ready: urgent alerts at any
/// hour, what working hours released, what is due a retry. Returns whether it dispatched.
pub async fn between_passes(
    store: &Store,
    settings: &Settings,
    ctx: &Context,
    dispatcher: Option<&crate::notify::dispatcher::Dispatcher>,
    now: Timestamp,
    send_due: bool,
) -> Result<bool, StoreError> {
    let queued = crate::notify::urgent::decide(store, ctx, &settings.urgent, now).await?;
    match dispatcher {
        Some(dispatcher) if send_due || queued > 0 => {
            dispatcher.dispatch(store, now).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
