#!/usr/bin/env bash
# The pages under load: `serve` (release build) on SQLite with a year of the example council's
# work, measured with ApacheBench (`ab`, Debian's apache2-utils) from the same machine.
#
#   scripts/bench-web.sh            # prints the numbers BENCHMARKS.md records
#
# Floor: the static stylesheet handler on the same server (no database, no template).
# Pages: "my work" of a team manager (GET), an audit page (GET), an audit POST that fails
# validation (reads, validates, re-renders; writes nothing, so it can be repeated), and real
# completions (POST, sequential with curl: each completes a different assignment).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ab >/dev/null || { echo "needs ab (apt-get install apache2-utils)" >&2; exit 1; }
cargo build --locked --release -q
BIN="$PWD/target/release/qaloop"
DIR="$(mktemp -d)"
trap 'kill "$(cat "$DIR/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cp config/schedule.toml config/bank-holidays.json config/example-staff.csv config/example.toml "$DIR/"
cd "$DIR"
# A year of work: start twelve months back; complete the oldest 400 assignments.
START=$(date -u -d "$(date -u +%Y-%m-01) -12 months" +%Y-%m-%d)
sed -i "s/^# start_date = .*/start_date = \"$START\"/" example.toml
Q="$BIN --config example.toml"
$Q tick >/dev/null
ADMIN=$(grep -m1 qa_admin example-staff.csv | cut -d, -f1)
$Q assignments list --status open --format csv | awk -F, 'NR>1 && n++ < 400 {print $1}' |
  while read -r id; do $Q assignments complete "$id" --by "$ADMIN" --note bench >/dev/null; done
PORT=18090; B="http://127.0.0.1:$PORT"
QALOOP__WEB__LISTEN="127.0.0.1:$PORT" RUST_LOG=warn $Q serve >serve.log 2>&1 & echo $! >pid
for _ in $(seq 1 100); do curl -sf "$B/static/qaloop.css" >/dev/null && break; sleep 0.1; done
TM=$(awk -F, '$4 ~ /team_manager/ {print $1; exit}' example-staff.csv)
AID=$($Q assignments list --status open --activity file-audit --person "$TM" --format csv | awk -F, 'NR==2{print $1}')
ME=$($Q link --for "$TM" | sed "s#^http://[^/]*#$B#")
IT=$($Q link --for "$TM" --item "$AID" | sed "s#^http://[^/]*#$B#")
CSRF=$(curl -s "$IT" | grep -o 'name="csrf" value="[^"]*"' | sed 's/.*value="//;s/"//')
printf 'csrf=%s&case_reference=CIN-1234&overall_grade=Good' "$CSRF" >post.txt
echo "assignments: $($Q assignments list --status all --format csv | tail -n +2 | wc -l); load: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { echo "== $1"; shift; ab -q -n 3000 -c 8 "$@" 2>&1 | grep -E "Requests per second|^  50%|^  99%|Failed requests"; }
run "floor: GET /static/qaloop.css" "$B/static/qaloop.css"
run "GET my work ($TM)" "$ME"
run "GET audit page" "$IT"
run "POST audit with errors (400, no write)" -p post.txt -T application/x-www-form-urlencoded "$IT"
echo "== POST completion (sequential, 100 different assignments, seconds each)"
$Q assignments list --status open --format csv | awk -F, 'NR>1 && $2 != "file-audit" && $2 != "audit-moderation" && n++ < 100 {print $1}' |
  while read -r id; do
    U=$($Q link --for "$ADMIN" --item "$id" | sed "s#^http://[^/]*#$B#")
    C=$(curl -s "$U" | grep -o 'name="csrf" value="[^"]*"' | sed 's/.*value="//;s/"//')
    curl -s -o /dev/null -w '%{time_total}\n' -X POST -H 'content-type: application/x-www-form-urlencoded' \
      --data-binary "csrf=$C&note=bench" "$U"
  done | sort -n | awk '{a[NR]=$1} END {printf "n=%d p50=%.1f ms p99=%.1f ms\n", NR, a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000}'
