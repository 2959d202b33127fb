#!/usr/bin/env bash
# The test files whose scenarios read the real clock (the `serve` runs of tests/faults.rs,
# tests/ops.rs and tests/cli.rs), run with the wall clock moved to each given London time by
# libfaketime (`apt-get install -y faketime`), so a CI run at an awkward hour is tried today:
# a weekday before 08:00, a Friday evening, a weekend, the day after a bank holiday, the
# minutes around a clock change. Only the wall clock moves (monotonic time is left alone, so
# timeouts still mean seconds), by an offset shared by every process the tests start; the
# PostgreSQL server keeps the real time. Not part of CI. See RELIABILITY.md, "Any day, any
# hour".
#
#   scripts/test-at.sh "2026-12-29 09:30"
#   scripts/test-at.sh "2027-03-28 00:59:30" "2026-12-12 12:00"
#   TESTS="faults" scripts/test-at.sh "2026-12-07 07:45"
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || { echo "usage: $0 'YYYY-MM-DD HH:MM[:SS]' (London time) ..." >&2; exit 2; }
lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -n 1 || true)
[ -n "$lib" ] || { echo "libfaketime is missing: apt-get install -y faketime" >&2; exit 2; }

tests=${TESTS:-"faults ops cli"}
args=()
for t in $tests; do args+=(--test "$t"); done
# Build with the real clock (cargo compares file times), then run the test binaries it built
# (under deps/; the `qaloop` binary the tests start is listed too).
bins=$(cargo test --locked --no-run --message-format=json "${args[@]}" |
  sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p')

failed=0
for when in "$@"; do
  target=$(TZ=Europe/London date -d "$when" +%s)
  offset=$((target - $(date +%s)))
  for bin in $bins; do
    name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
    if out=$(LD_PRELOAD="$lib" FAKETIME="+${offset}s" FAKETIME_DONT_FAKE_MONOTONIC=1 \
      "$bin" 2>&1); then
      echo "$when London  $name: $(grep '^test result' <<<"$out" | tail -n 1)"
    else
      failed=1
      echo "$when London  $name: FAILED"
      grep -E '^test .* FAILED$|panicked at' <<<"$out" | head -n 20
    fi
  done
done
exit "$failed"
