#!/usr/bin/env bash
# Runs the reconcile benchmark in the release profile: a year of daily ticks at council size
# (40 team managers) and national size (10,000 staff), on SQLite and PostgreSQL. See
# BENCHMARKS.md for what it measures and the targets.
#
#   scripts/bench.sh                print the results table
#   scripts/bench.sh --record       also append them to BENCHMARKS.md with date, commit, machine
#   scripts/bench.sh national       only scenarios whose name contains "national"
#
# PostgreSQL: QALOOP_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test); when it is
# unreachable those scenarios are skipped with a notice.
set -euo pipefail
cd "$(dirname "$0")/.."

record=false
filters=()
for arg in "$@"; do
    case "$arg" in
        --record) record=true ;;
        *) filters+=("$arg") ;;
    esac
done

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --locked --bench reconcile -- ${filters[@]+"${filters[@]}"} | tee "$out"

if $record; then
    dirty=""
    git diff --quiet HEAD -- . ':!BENCHMARKS.md' || dirty=" (plus uncommitted changes)"
    {
        echo
        echo "### $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "\`scripts/bench.sh${filters[*]:+ ${filters[*]}}\` at commit \`$(git rev-parse --short HEAD)\`${dirty};" \
            "$(nproc) cores, $(uname -sm), $(rustc --version | cut -d' ' -f1-2)."
        echo
        cat "$out"
    } >> BENCHMARKS.md
    echo "appended to BENCHMARKS.md"
fi
