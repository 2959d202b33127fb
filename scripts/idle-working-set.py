#!/usr/bin/env python3
"""The idle working set of a running process: pages out its file-backed mappings (the binary's
code and read-only data, shared libraries) with process_madvise(MADV_PAGEOUT), then watches what
it touches again while idle. Diagnostic only, not part of CI; needs root (CAP_SYS_NICE) and
Linux 5.10+. See BENCHMARKS.md, "Idle serve".

    scripts/idle-working-set.py PID [SECONDS]
"""
import ctypes, os, re, sys, time
pid = int(sys.argv[1]); wait = int(sys.argv[2]) if len(sys.argv) > 2 else 60
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
def rollup():
    f = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        p = line.split()
        if len(p) >= 2 and p[1].isdigit(): f[p[0][:-1]] = int(p[1])
    return f["Rss"], f["Anonymous"]
ranges = []
for line in open(f"/proc/{pid}/maps"):
    m = re.match(r'([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(\S*)', line)
    if m and m.group(4).startswith('/') and not m.group(4).endswith(('-shm',)):
        ranges.append((int(m.group(1), 16), int(m.group(2), 16)))
pidfd = libc.syscall(434, pid, 0)
iov = (iovec * len(ranges))(*[iovec(a, b - a) for a, b in ranges])
print("before: RSS %d KiB, anon %d KiB" % rollup())
r = libc.syscall(440, pidfd, iov, len(ranges), 21, 0)
print("pageout returned", r, os.strerror(ctypes.get_errno()) if r < 0 else "")
print("just after: RSS %d KiB, anon %d KiB" % rollup())
time.sleep(wait)
print(f"after {wait} s idle: RSS %d KiB, anon %d KiB" % rollup())
