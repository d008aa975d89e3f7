#!/usr/bin/env python3
"""Ordered streams side by side: `spate URL -o - | HASH` against the same download to a file and
against `curl URL | HASH`, on nginx over loopback with every connection capped (limit_rate).

Per run, interleaved: spate to a file, spate to a pipe into the hash (sha256sum, and openssl dgst
which is faster than the link), curl into the same hashes. Every digest is compared with the
file's. Reports medians, the ratio stream/file, spate's peak RSS, and the peak growth of the
system's shared memory (the reorder window lives in a memfd: shared memory, not RSS).

Then a slow reader (10 MiB/s for --slow-seconds) and a reader that leaves after 1 MiB: the
reorder window's memory stays bounded, and spate exits 141 soon after the reader is gone.

Usage: stream.py --spate PATH [--size 1G] [--runs 3] [--connections 16] [--window 64M]
                 [--pause-page-reporting]
"""
import argparse, os, statistics, subprocess, sys, tempfile, threading, time, shutil
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import (NGINX_PREAMBLE, start_nginx, make_file, sha256_file, parse_size,
                     pause_page_reporting, restore_page_reporting)

CONF = NGINX_PREAMBLE + """
    server {{ listen 127.0.0.1:{port}; root {www}; limit_rate 25m; sendfile_max_chunk 256k; }}
}}
"""

def shmem_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1])
    return 0

class ShmemSampler:
    """Samples /proc/meminfo's Shmem every 50 ms; `peak_growth` is the largest rise (KiB)."""
    def __init__(self):
        self.base = shmem_kib()
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
    def loop(self):
        while self.running:
            self.peak = max(self.peak, shmem_kib())
            time.sleep(0.05)
    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak - self.base

def pipeline(producer, consumer):
    """Runs `producer | consumer`; returns (wall s, producer peak RSS KiB, producer exit, consumer stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        sampler = ShmemSampler()
        started = time.monotonic()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", tf.name] + producer,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        c = subprocess.Popen(consumer, stdin=p.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        p.stdout.close()
        out, _ = c.communicate()
        p.wait()
        wall = time.monotonic() - started
        shm = sampler.stop()
        rss = int((tf.read().strip().splitlines() or ["0"])[-1])
    return wall, rss, p.returncode, out, shm

def digest_of(text):
    return text.split()[-1] if "=" in text else text.split()[0]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", required=True)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--window", default="64M")
    ap.add_argument("--slow-seconds", type=float, default=15)
    ap.add_argument("--pause-page-reporting", action="store_true")
    args = ap.parse_args()
    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="spate-stream-")
    www = os.path.join(work, "www")
    os.makedirs(www)
    os.chmod(work, 0o755)  # nginx's workers read it as another user
    old = pause_page_reporting() if args.pause_page_reporting else None
    try:
        src = os.path.join(www, "f.bin")
        make_file(src, size)
        os.chmod(src, 0o644)
        expected = sha256_file(src)
        port = 18490
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(work=work, www=www, port=port))
        nginx = start_nginx(conf, work, [port])
        try:
            run_all(args, size, work, expected, port)
        finally:
            nginx.terminate()
            nginx.wait()
    finally:
        if old is not None:
            restore_page_reporting(old)
        shutil.rmtree(work, ignore_errors=True)

def run_all(args, size, work, expected, port):
    if True:
        url = f"http://127.0.0.1:{port}/f.bin"
        spate = [args.spate, url, "-c", str(args.connections), "-q"]
        hashes = {"sha256sum": ["sha256sum"], "openssl": ["openssl", "dgst", "-sha256"]}
        rows = {}
        def add(name, seconds, rss=None, shm=None):
            rows.setdefault(name, {"t": [], "rss": [], "shm": []})
            rows[name]["t"].append(seconds)
            if rss is not None: rows[name]["rss"].append(rss)
            if shm is not None: rows[name]["shm"].append(shm)
        out_file = os.path.join(work, "out.bin")
        for run in range(args.runs):
            if os.path.exists(out_file): os.unlink(out_file)
            with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
                started = time.monotonic()
                done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + spate + ["-o", out_file],
                                      stderr=subprocess.PIPE, text=True)
                rc = done.returncode
                if rc != 0: print(done.stderr, file=sys.stderr)
                wall = time.monotonic() - started
                rss = int(tf.read().strip().splitlines()[-1])
            assert rc == 0 and sha256_file(out_file) == expected, "spate to a file: wrong output"
            add("spate -o FILE", wall, rss)
            os.unlink(out_file)
            for hname, hcmd in hashes.items():
                wall, rss, rc, out, shm = pipeline(spate + ["-o", "-", "--window", args.window], hcmd)
                assert rc == 0 and digest_of(out) == expected, f"spate -o - | {hname}: wrong digest or exit {rc}"
                add(f"spate -o - \\| {hname}", wall, rss, shm)
                if hname == "sha256sum":  # one connection at 25 MiB/s: once is enough to show it
                    wall, rss, rc, out, shm = pipeline(["curl", "-s", url], hcmd)
                    assert rc == 0 and digest_of(out) == expected, f"curl | {hname}: wrong digest"
                    add(f"curl \\| {hname}", wall, rss, shm)
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
        mib = size / 1048576
        file_t = statistics.median(rows["spate -o FILE"]["t"])
        ideal = mib / (25 * args.connections)
        print(f"\n{mib:.0f} MiB, nginx limit_rate 25m per connection, -c {args.connections} (ideal {ideal:.2f} s), "
              f"window {args.window}, medians of {args.runs}\n")
        print("| command | time | rate | vs spate -o FILE | peak RSS | peak shared-memory growth |")
        print("|---|---|---|---|---|---|")
        for name, r in rows.items():
            t = statistics.median(r["t"])
            rss = f"{statistics.median(r['rss']) / 1024:.0f} MiB" if r["rss"] else ""
            shm = f"{max(r['shm']) / 1024:.0f} MiB" if r["shm"] else ""
            print(f"| `{name}` | {t:.2f} s | {mib / t:.0f} MiB/s | {file_t / t * 100:.0f} % | {rss} | {shm} |")

        # A slow reader: 10 MiB/s for a while, then it leaves.
        slow = ("import sys,time\nr=sys.stdin.buffer\nend=time.monotonic()+%f\nwhile time.monotonic()<end:\n"
                "    t=time.monotonic()\n    r.read(1048576)\n    time.sleep(max(0,0.1-(time.monotonic()-t)))\n" % args.slow_seconds)
        wall, rss, rc, _, shm = pipeline(spate + ["-o", "-", "--window", args.window], ["python3", "-c", slow])
        print(f"\nslow reader (10 MiB/s for {args.slow_seconds:.0f} s, then it exits): spate exit {rc}, "
              f"peak RSS {rss / 1024:.0f} MiB, peak shared-memory growth {shm / 1024:.0f} MiB (window {args.window})")
        # A reader that leaves after 1 MiB: how long spate runs after it is gone.
        quick = "import sys,time\nsys.stdin.buffer.read(1048576)\nprint(time.monotonic())\n"
        p = subprocess.Popen(spate + ["-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        c = subprocess.run(["python3", "-c", quick], stdin=p.stdout, capture_output=True, text=True)
        p.stdout.close()
        left = float(c.stdout.strip())
        p.wait()
        after = time.monotonic() - left
        print(f"reader leaves after 1 MiB: spate exit {p.returncode}, {after:.2f} s after the reader exited")

if __name__ == "__main__":
    main()
