#!/usr/bin/env bash
# A national-size year with notifications on (reconcile, the daily decision, dispatch to a
# loopback SMTP sink), on SQLite and PostgreSQL, release build. What it prints, the settings and
# the figures last recorded: benches/notify_year.rs and BENCHMARKS.md, "Notifications: a
# national-size year". Arguments filter backends (`scripts/bench-notify.sh sqlite`).
# Optional: QALOOP_BENCH_STAFF, QALOOP_BENCH_TEAM_MANAGERS, QALOOP_BENCH_DAYS, QALOOP_BENCH_FROM,
# QALOOP_BENCH_CONNECTIONS (default 4), QALOOP_BENCH_PER_DAY=1,
# QALOOP_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --locked --bench notify_year -- "$@"
