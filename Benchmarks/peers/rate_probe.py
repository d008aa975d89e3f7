#!/usr/bin/env python3
"""Measures what a `--max-rate` download really reads, over sliding 5-second windows.

Usage: rate_probe.py TARGET_MIB_PER_S PORT spate URL ... (the command to run)

Every 100 ms it sums, over the client's TCP connections to PORT, `bytes_received` minus the
bytes still waiting in the receive queue (`ss -tin`): the bytes the application has read.
(Counting loopback packets instead would count what the kernel buffers on spate's behalf, and
spate's own progress counts staged writes, which move in steps of one staging buffer per
connection.) Connections that closed keep their last count. Windows that start in the first
second (connection set-up, the probe) are left out."""
import re, subprocess, sys, time

target = float(sys.argv[1])
port = sys.argv[2]
cmd = sys.argv[3:]

def read_bytes():
    out = subprocess.run(["ss", "-tinH", f"dport = :{port}"], capture_output=True, text=True).stdout
    result = {}
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        head = lines[i].split()
        info = lines[i + 1] if i + 1 < len(lines) else ""
        i += 2
        if len(head) < 4:
            continue
        queued = int(head[1])
        m = re.search(r"bytes_received:(\d+)", info)
        if m:
            result[head[3]] = int(m.group(1)) - queued
    return result

p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
started = time.monotonic()
seen = {}
samples = []
while p.poll() is None:
    seen.update(read_bytes())
    samples.append((time.monotonic(), sum(seen.values())))
    time.sleep(0.1)
err = p.stderr.read()
windows = []
for j, (t0, b0) in enumerate(samples):
    if t0 - started < 1.0:
        continue
    for t1, b1 in samples[j:]:
        if t1 - t0 >= 5.0:
            windows.append((b1 - b0) / (t1 - t0) / 1048576)
            break
print(err.strip().splitlines()[-1] if err.strip() else "")
print(f"target {target} MiB/s: {len(windows)} 5-s windows of bytes read, min {min(windows):.3f}, "
      f"median {sorted(windows)[len(windows) // 2]:.3f}, max {max(windows):.3f} MiB/s; "
      f"worst deviation {max(abs(w - target) for w in windows) / target * 100:.1f} %")
