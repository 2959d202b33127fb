//! `/metrics` in the Prometheus text format, through the `metrics` facade and
//! `metrics-exporter-prometheus`. Counters and the pass-duration histogram are recorded as
//! things happen (process lifetime); gauges about the data — work by activity and status,
//! overdue work, the outbox by status and channel, the last backup, bank-holiday coverage —
//! are read from the database at scrape time with cheap aggregate queries, and every expected
//! series is written (at zero if need be) so a count that drops to nothing reads 0, not stale.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::http::OpsState;

const STATUSES: &[&str] = &["open", "done", "cancelled"];
const OUTBOX_STATUSES: &[&str] = &["pending", "failed", "sent", "dead", "cancelled"];

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("qaloop_pass_duration_seconds".into()),
                &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0],
            )
            .expect("non-empty buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (a test harness): render ours anyway.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// A pass finished: its duration and outcome.
pub fn record_pass(seconds: f64, ok: bool) {
    handle();
    histogram!("qaloop_pass_duration_seconds").record(seconds);
    counter!("qaloop_passes_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// One delivery attempt on `channel`: `sent`, `retry` (temporary failure) or `dead`.
pub fn record_send(channel: &str, result: &'static str) {
    handle();
    counter!("qaloop_send_attempts_total", "channel" => channel.to_owned(), "result" => result)
        .increment(1);
}

/// The metrics routes (state supplied by [`super::http::routes`]).
pub fn routes() -> Router<OpsState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<OpsState>) -> impl IntoResponse {
    let handle = handle();
    let up = gather(&state).await;
    gauge!("qaloop_database_up").set(if up { 1.0 } else { 0.0 });
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// Sets the data gauges from the database; `false` if it did not answer.
async fn gather(state: &OpsState) -> bool {
    let facts = state.facts();
    let now = state.clock.now();
    let today = facts.ctx.today(now);
    let store = &state.store;

    if let Some(pass) = state.vitals.last_pass() {
        gauge!("qaloop_last_pass_timestamp_seconds").set(pass.at.as_second() as f64);
    }
    let coverage = facts
        .ctx
        .calendar
        .last_year()
        .and_then(|y| jiff::civil::date(y, 12, 31).since(today).ok())
        .map_or(0, |span| span.get_days().max(0));
    gauge!("qaloop_bank_holiday_days_left").set(f64::from(coverage));

    let queries = async {
        let work = store.assignments_by_activity_and_status().await?;
        let overdue = store.overdue_by_activity(today).await?;
        let outbox = store.outbox_by_status_and_channel().await?;
        let backup = store.last_backup_at().await?;
        Ok::<_, crate::store::StoreError>((work, overdue, outbox, backup))
    };
    let Ok(Ok((work, overdue, outbox, backup))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), queries).await
    else {
        return false;
    };

    let activities: Vec<String> = facts
        .ctx
        .schedule
        .activities
        .iter()
        .map(|a| a.id.clone())
        .collect();
    let find = |rows: &[crate::store::stats::Count], a: &str, b: &str| {
        rows.iter()
            .find(|c| c.a == a && c.b == b)
            .map_or(0, |c| c.n)
    };
    for activity in activities.iter().chain(work.iter().map(|c| &c.a)) {
        for status in STATUSES {
            gauge!("qaloop_assignments", "activity" => activity.clone(), "status" => *status)
                .set(find(&work, activity, status) as f64);
        }
    }
    for activity in activities.iter().chain(overdue.iter().map(|c| &c.a)) {
        gauge!("qaloop_assignments_overdue", "activity" => activity.clone())
            .set(find(&overdue, activity, "") as f64);
    }
    for channel in facts.channels.iter().chain(outbox.iter().map(|c| &c.b)) {
        for status in OUTBOX_STATUSES {
            gauge!("qaloop_outbox_messages", "status" => *status, "channel" => channel.clone())
                .set(find(&outbox, status, channel) as f64);
        }
    }
    if let Some(at) = backup {
        gauge!("qaloop_last_backup_timestamp_seconds").set(at.as_second() as f64);
    }
    true
}
