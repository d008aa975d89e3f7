#!/usr/bin/env python3
"""Round trips side by side: spate, axel and aria2c against a server that holds every reply one
round trip and paces every connection (spate-test-server --latency MS --rate R; this kernel has
no netem, and loopback has no round trip of its own).

Scenarios (each tool writes the file to /dev/shm; medians of --runs, interleaved):
  rtt-80    --latency 80,  10 MiB/s per connection: spate -c 16 --no-tuning, axel -n 16, aria2c -x16 -s16
  rtt-200   --latency 200, same
  cap-0     no latency, 429 past 16 requests per client: spate with default settings
  cap-80    --latency 80, 429 past 16 requests per client: spate with default settings
The ideal is size / (16 x rate) plus nothing; reported: seconds, MiB/s and % of 16 x rate.

Usage: round_trip.py --spate PATH --server PATH [--size 1G] [--runs 3] [--only rtt-80,...]
                     [--pause-page-reporting]
"""
import argparse, os, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import parse_size, pause_page_reporting, restore_page_reporting

RATE = 10 * 1024 * 1024
SCENARIOS = {
    "rtt-80": dict(latency=80, cap=None, default=False),
    "rtt-200": dict(latency=200, cap=None, default=False),
    "cap-0": dict(latency=0, cap=16, default=True),
    "cap-80": dict(latency=80, cap=16, default=True),
}


def start_server(server, port, size, latency=0, cap=None, rate=RATE, threads=2):
    """A spate-test-server serving /f.bin of `size`; returns (process, its URL)."""
    cmd = [server, "--port", str(port), "--threads", str(threads), "--rate", str(rate),
           "--file", f"/f.bin:{size}:7", "--exit-on-stdin-eof"]
    if latency:
        cmd += ["--latency", str(latency)]
    if cap:
        cmd += ["--max-connections", str(cap)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = p.stdout.readline().strip()
    return p, url


def timed(cmd, out, size):
    if os.path.exists(out):
        os.remove(out)
    for leftover in (out + ".st", out + ".aria2"):
        if os.path.exists(leftover):
            os.remove(leftover)
    start = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    ok = r.returncode == 0 and os.path.exists(out) and os.path.getsize(out) == size
    if not ok:
        print(f"  FAILED ({r.returncode}): {' '.join(cmd)}\n  {r.stderr.strip()[-300:]}", file=sys.stderr)
    os.remove(out) if os.path.exists(out) else None
    return seconds if ok else None


def interleaved(tools, out, size, runs):
    """Runs every tool `runs` times, interleaved tool by tool; returns each tool's times."""
    times = {t: [] for t in tools}
    for _ in range(runs):
        for tool, cmd in tools.items():
            t = timed(cmd, out, size)
            if t is not None:
                times[tool].append(t)
    return times


def report(times, size, ideal, width=28):
    """One line per tool: median seconds, MiB/s, % of the ideal, and every run."""
    for tool, ts in times.items():
        if not ts:
            print(f"  {tool:{width}s} failed")
            continue
        m = statistics.median(ts)
        print(f"  {tool:{width}s} {m:6.2f} s  {size / m / 2**20:6.1f} MiB/s  {100 * ideal / m:5.1f} %"
              f"   runs: {', '.join(f'{t:.2f}' for t in ts)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--pause-page-reporting", action="store_true")
    args = ap.parse_args()
    size = parse_size(args.size)
    ideal = size / (16 * RATE)
    old = pause_page_reporting() if args.pause_page_reporting else None
    out = "/dev/shm/spate-rtt.bin"
    try:
        for port, name in enumerate(args.only.split(","), start=18700):
            s = SCENARIOS[name]
            server, url = start_server(args.server, port, args.size, s["latency"], s["cap"])
            try:
                spate = [args.spate, url, "-o", out, "--force"]
                if not s["default"]:
                    spate += ["-c", "16", "--no-tuning"]
                tools = {
                    "spate" + ("" if s["default"] else " -c16 --no-tuning"): spate,
                    "axel -n16": ["axel", "-q", "-n", "16", "-o", out, url],
                    "aria2c -x16 -s16": ["aria2c", "-q", "-x16", "-s16", "-k1M", "--allow-overwrite=true",
                                         "--auto-file-renaming=false", "--file-allocation=none",
                                         "-d", os.path.dirname(out), "-o", os.path.basename(out), url],
                }
                times = interleaved(tools, out, size, args.runs)
                print(f"== {name}: latency {s['latency']} ms, {RATE >> 20} MiB/s per connection"
                      + (f", 429 past {s['cap']} requests" if s["cap"] else "")
                      + f"; ideal {ideal:.2f} s ({size / ideal / 2**20:.0f} MiB/s); medians of {args.runs}")
                report(times, size, ideal)
                sys.stdout.flush()
            finally:
                server.stdin.close()
                server.wait()
    finally:
        if old is not None:
            restore_page_reporting(old)


if __name__ == "__main__":
    main()
