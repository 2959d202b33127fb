#!/usr/bin/env bash
# Dispatch throughput and peak memory, qaloop's dispatcher against a bare send loop (release
# build). What it prints, and the figures last recorded: BENCHMARKS.md, "Dispatch".
# Optional: QALOOP_BENCH_SIZES (default 1000,10000), QALOOP_BENCH_RUNS (default 3),
# QALOOP_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --locked --bench dispatch "$@"
