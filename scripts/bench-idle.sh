#!/usr/bin/env bash
# Idle benchmark (issue 9): `qaloop serve` (release build) on the example council with a year of
# data, idle for IDLE_SECONDS (default 60): start to READY=1, resident memory, CPU used. When
# Debian's prometheus-alertmanager is installed, Alertmanager runs side by side in the same run
# as the peer (`apt-get install -y prometheus-alertmanager`; its service is not used).
# Not part of CI. See BENCHMARKS.md, "Idle serve".
#
# BEFORE_BIN=PATH runs a second qaloop binary (an older build) side by side, on its own copy of
# the same database, so a change is measured before/after on the same data in the same run (the
# older build must know the database's migrations). For each qaloop it prints RSS right after
# READY=1 and at the end of the window, and at the end where it lives (/proc/PID/smaps_rollup:
# anonymous memory — the heap, stacks — versus file-backed pages, mostly the binary's code).
#
#   scripts/bench-idle.sh
#   IDLE_SECONDS=300 scripts/bench-idle.sh
#   BEFORE_BIN=/tmp/qaloop-before scripts/bench-idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."

idle=${IDLE_SECONDS:-60}
cargo build --locked --release --quiet
bin=$PWD/target/release/qaloop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp config/schedule.toml config/bank-holidays.json config/example-staff.csv "$work/"
sed -e 's|^# listen = "127.0.0.1:9464".*|listen = "127.0.0.1:0"|' config/example.toml >"$work/qaloop.toml"
grep -q '^listen = "127.0.0.1:0"' "$work/qaloop.toml"

# A year of data: a tick at 09:00 London on every weekday of the 365 days up to yesterday.
start=$(date +%s)
ticks=0
for back in $(seq 365 -1 1); do
    day=$(date -u -d "@$((start - back * 86400))" +%F)
    [ "$(date -u -d "$day" +%u)" -le 5 ] || continue
    TZ=Europe/London "$bin" --config "$work/qaloop.toml" tick \
        --now "$(TZ=Europe/London date -d "$day 09:00" --iso-8601=seconds)" >/dev/null
    ticks=$((ticks + 1))
done
echo "data: $ticks ticks; $("$bin" --config "$work/qaloop.toml" assignments list --format json --now "$(date -u +%FT%TZ)" | grep -c '"id"') assignments," \
     "$("$bin" --config "$work/qaloop.toml" outbox list --format json --limit 10000000 | grep -c '"key"') outbox rows," \
     "database $(du -k "$work/qaloop-example.db" | cut -f1) KiB"

before=${BEFORE_BIN:-}
if [ -n "$before" ]; then
    # The same data for the older build: a copy of the folder, database and all.
    mkdir "$work/before"
    cp "$work"/*.toml "$work"/*.json "$work"/*.csv "$work"/qaloop-example.db* "$work/before/"
    cp "$work"/link.key "$work/before/" 2>/dev/null || true
    mkdir -p "$work/before/outbox"
fi

am=$(command -v prometheus-alertmanager || true)
python3 - "$bin" "$work" "$idle" "$am" "$before" <<'PY'
import os, socket, subprocess, sys, time, urllib.request

bin, work, idle, am, before = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

def thread_ns(pid):
    """CPU time of each live thread, from schedstat (nanoseconds, not 10 ms clock ticks)."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            times[tid] = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return times

class CpuMeter:
    """CPU used since start, sampled every second: each thread's last reading counts, so a
    thread that exits in the window (SQLite's, when an idle connection closes) keeps the time
    it used up to its last sample instead of taking it out of the total."""
    def __init__(self, pid):
        self.pid, self.start, self.last = pid, thread_ns(pid), {}
    def sample(self):
        self.last.update(thread_ns(self.pid))
    def used_ns(self):
        self.sample()
        return sum(t - self.start.get(tid, 0) for tid, t in self.last.items())

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def rollup_kib(pid):
    """Anonymous and file-backed resident memory, from /proc/PID/smaps_rollup."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            fields[parts[0][:-1]] = int(parts[1])
    return fields.get("Anonymous", 0), fields.get("Rss", 0) - fields.get("Anonymous", 0)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

procs = []
at_ready = {}

def start_qaloop(name, binary, folder):
    """Starts `serve` in `folder`; returns (process, seconds to READY=1), as systemd would see it."""
    sock_path = os.path.join(folder, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "JOURNAL_STREAM")}
    env["NOTIFY_SOCKET"] = sock_path
    env["QALOOP__WEB__LISTEN"] = "127.0.0.1:0"  # two qaloops side by side
    log = open(os.path.join(folder, "serve.log"), "w")
    t0 = time.monotonic()
    q = subprocess.Popen([binary, "--config", os.path.join(folder, "qaloop.toml"), "serve"],
                         env=env, stdout=subprocess.DEVNULL, stderr=log)
    procs.append(q)
    while b"READY=1" not in sock.recv(4096):
        pass
    ready = time.monotonic() - t0
    at_ready[name] = rss_kib(q.pid)
    return q, ready

try:
    qaloops = []
    if before:
        qaloops.append(("qaloop serve before",) + start_qaloop("qaloop serve before", before,
                                                               os.path.join(work, "before")))
    qaloops.append(("qaloop serve",) + start_qaloop("qaloop serve", bin, work))

    a = None
    if am:
        cfg = os.path.join(work, "alertmanager.yml")
        open(cfg, "w").write("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
        port = free_port()
        t0 = time.monotonic()
        a = subprocess.Popen([am, f"--config.file={cfg}", f"--storage.path={work}/am",
                              f"--web.listen-address=127.0.0.1:{port}",
                              "--cluster.listen-address="],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(a)
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                break
            except Exception:
                time.sleep(0.01)
        a_ready = time.monotonic() - t0

    time.sleep(2)  # let both settle after start-up
    watched = qaloops + ([("alertmanager 0.25", a, a_ready)] if a else [])
    meters = {name: CpuMeter(p.pid) for name, p, _ in watched}
    peak = {name: 0 for name, _, _ in watched}
    end = time.monotonic() + idle
    while time.monotonic() < end:
        for name, p, _ in watched:
            peak[name] = max(peak[name], rss_kib(p.pid))
            meters[name].sample()
        time.sleep(1)
    print(f"idle {idle} s, load average {open('/proc/loadavg').read().split()[0]}")
    print(f"{'process':<20} {'to ready':>10} {'RSS MiB':>8} {'peak MiB':>9} {'CPU ms/min':>11}"
          f" {'at READY':>9} {'anon MiB':>9} {'file MiB':>9}")
    for name, p, ready in watched:
        used = meters[name].used_ns() / 1e6 * 60 / idle
        anon, filed = rollup_kib(p.pid)
        ready_rss = f"{at_ready[name] / 1024:>9.1f}" if name in at_ready else f"{'':>9}"
        print(f"{name:<20} {ready * 1000:>8.0f}ms {rss_kib(p.pid) / 1024:>8.1f} "
              f"{peak[name] / 1024:>9.1f} {used:>11.1f} {ready_rss} {anon / 1024:>9.1f}"
              f" {filed / 1024:>9.1f}")
    if not a:
        print("alertmanager: not installed (apt-get install -y prometheus-alertmanager)")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
PY
