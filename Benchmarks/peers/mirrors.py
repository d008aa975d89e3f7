#!/usr/bin/env python3
"""Two sources of one file side by side: spate --mirror, aria2c and axel with both URLs.

Two spate-test-server processes serve the same generated file (same bytes, same ETag) on two
ports — two origins, each with its own connection budget — one paced at 16 MiB/s per
connection, the other at 4 MiB/s. Every tool uses 8 connections per source (16 in all); the
ideal is size / (8 x 16 + 8 x 4 MiB/s). Each tool writes to /dev/shm; medians of --runs,
interleaved.

Usage: mirrors.py --spate PATH --server PATH [--size 1G] [--runs 3] [--pause-page-reporting]
"""
import argparse, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import parse_size, pause_page_reporting, restore_page_reporting
from round_trip import interleaved, report, start_server

FAST, SLOW = 16 << 20, 4 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pause-page-reporting", action="store_true")
    args = ap.parse_args()
    size = parse_size(args.size)
    ideal = size / (8 * (FAST + SLOW))
    old = pause_page_reporting() if args.pause_page_reporting else None
    out = "/dev/shm/spate-mirrors.bin"
    fast, fast_url = start_server(args.server, 18801, args.size, rate=FAST, threads=1)
    slow, slow_url = start_server(args.server, 18802, args.size, rate=SLOW, threads=1)
    try:
        tools = {
            "spate -c16 --max-per-host 8 --mirror": [args.spate, fast_url, "--mirror", slow_url, "-c", "16", "--max-per-host", "8", "--no-tuning",
                                                "-o", out, "--force"],
            "aria2c -x8 -s16 (2 URIs)": ["aria2c", "-q", "-x8", "-s16", "-k1M", "--allow-overwrite=true",
                                         "--auto-file-renaming=false", "--file-allocation=none",
                                         "-d", os.path.dirname(out), "-o", os.path.basename(out), fast_url, slow_url],
            "axel -n16 (2 URLs)": ["axel", "-q", "-n", "16", "-o", out, fast_url, slow_url],
        }
        times = interleaved(tools, out, size, args.runs)
        print(f"== two sources, 8 connections each at {FAST >> 20} and {SLOW >> 20} MiB/s per connection; "
              f"ideal {ideal:.2f} s ({size / ideal / 2**20:.0f} MiB/s); medians of {args.runs}")
        report(times, size, ideal, width=38)
    finally:
        for p in (fast, slow):
            p.stdin.close()
            p.wait()
        if old is not None:
            restore_page_reporting(old)


if __name__ == "__main__":
    main()
