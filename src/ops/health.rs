//! `/healthz` (the process answers) and `/readyz` (it can do its job: the database answers, the
//! last pass is recent and succeeded, and no message has waited too long past its send time).
//! A failing check answers 503 with the reason in plain words.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::http::OpsState;

/// How long `/readyz` waits for the database.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes (state supplied by [`super::http::routes`]).
pub fn routes() -> Router<OpsState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, String) {
    match not_ready(&state).await {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why the daemon is not ready, or `None`.
pub async fn not_ready(state: &OpsState) -> Option<String> {
    let facts = state.facts();
    let now = state.clock.now();
    match tokio::time::timeout(DB_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => state.vitals.db_answered(),
        Ok(Err(e)) => return Some(format!("the database does not answer: {e}")),
        Err(_) => {
            return Some(format!(
                "the database did not answer within {} s",
                DB_TIMEOUT.as_secs()
            ));
        }
    }
    // SQLite answers reads from a file it can no longer write: ask the files themselves
    // (opened for writing, nothing written).
    if let Some(why) = facts
        .sqlite_url
        .as_deref()
        .and_then(super::check::sqlite_files_unwritable)
    {
        // The ping above may have opened a connection on files it cannot write; it must not
        // outlive the outage (`Store::saw_unwritable`).
        state.store.saw_unwritable();
        return Some(why);
    }
    let Some(pass) = state.vitals.last_pass() else {
        return Some("no pass has run yet".into());
    };
    if !pass.ok {
        return Some(match &pass.error {
            Some(error) => format!("the last pass (at {}) failed: {error}", pass.at),
            None => format!("the last pass (at {}) failed; see the log", pass.at),
        });
    }
    let age = now.duration_since(pass.at);
    if age.as_secs() > facts.max_pass_age.as_secs() as i64 {
        return Some(format!(
            "the last pass was at {} ({} min ago; the limit is {} min)",
            pass.at,
            age.as_secs() / 60,
            facts.max_pass_age.as_secs() / 60
        ));
    }
    match state.store.oldest_due_message(now).await {
        Ok(Some(due))
            if now.duration_since(due).as_secs() > facts.max_send_delay.as_secs() as i64 =>
        {
            let last = match state.store.last_sent_at().await {
                Ok(Some(at)) => format!("the last successful send was at {at}"),
                Ok(None) => "nothing has ever been sent".into(),
                Err(_) => "the last successful send is unknown".into(),
            };
            Some(format!(
                "a message has waited since {due} to be sent (over {} min); {last}",
                facts.max_send_delay.as_secs() / 60
            ))
        }
        Ok(_) => None,
        Err(e) => Some(format!("the outbox cannot be read: {e}")),
    }
}
