#!/usr/bin/env python3
"""Side-by-side download benchmark: spate vs aria2c, axel and curl on nginx over loopback.

Every tool downloads the same file from the same nginx, interleaved run by run (so machine noise
hits all tools alike); every output's SHA-256 is checked; medians, CPU seconds per GiB, peak RSS
and ratios against each peer are printed as a Markdown table.

Usage: compare.py --spate PATH [--size 1G] [--runs 3] [--scenarios uncapped,capped,straggler]
                  [--out-dir DIR] [--connections 16] [--extra-spate "--flag ..."]
       compare.py --spate PATH --scenarios mixed,small [--runs 3] [--pause-page-reporting]
                  (many files: runs many_files.py, see there)
"""
import argparse, hashlib, os, shutil, statistics, subprocess, sys, tempfile, time, datetime, platform

# The nginx set-up every benchmark here shares; each adds its `server` blocks.
NGINX_PREAMBLE = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    types {{ }}
    default_type application/octet-stream;
"""

NGINX_CONF = NGINX_PREAMBLE + """
    server {{ listen 127.0.0.1:{port_uncapped}; root {www}; }}
    server {{ listen 127.0.0.1:{port_capped}; root {www}; limit_rate 25m; }}
    # The straggler scenario: nginx is restarted before every run, so connection number 1 is the
    # first connection a client opens; it gets 1 MB/s, every other connection 25 MB/s.
    map $connection $straggler_rate {{ 1 1m; default 25m; }}
    server {{ listen 127.0.0.1:{port_straggler}; root {www}; limit_rate $straggler_rate; }}
}}
"""

def human_rate(bps):
    return f"{bps / 1048576:.0f} MiB/s"

def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper().rstrip("IB")
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)

def make_file(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    print(f"generating {size} random bytes at {path}", file=sys.stderr)
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        left = size
        while left:
            chunk = src.read(min(left, 1 << 24))
            dst.write(chunk)
            left -= len(chunk)

def sha256_file(path):
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", path], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]

def run_timed(cmd):
    """Runs cmd under GNU time; returns (wall seconds, cpu seconds, peak RSS KiB, exit status)."""
    fmt = "%e %U %S %M"
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        started = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-f", fmt, "-o", tf.name] + cmd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - started
        fields = tf.read().strip().splitlines()[-1].split()
    try:
        _, user, system, rss = fields
        return wall, float(user) + float(system), int(rss), proc.returncode, proc.stderr
    except ValueError:
        return wall, 0.0, 0, proc.returncode, proc.stderr

def start_nginx(conf, work, ports):
    """Starts nginx with `conf` once the previous instance is gone (a port that still answers
    would hide a failed bind), and returns it when every port in `ports` answers."""
    import socket
    ports = list(ports)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", ports[0]), timeout=0.2).close()
            time.sleep(0.05)
        except OSError:
            break
    proc = subprocess.Popen(["nginx", "-c", conf, "-e", os.path.join(work, "error.log")])
    for _ in range(100):
        try:
            for port in ports:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.05)
            if proc.poll() is None:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit("nginx did not start: see " + os.path.join(work, "error.log"))
        time.sleep(0.05)
    sys.exit("nginx did not start listening")

PAGE_REPORTING_ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"

def pause_page_reporting():
    """Raises the free-page-reporting order above the largest buddy order, so the guest stops
    handing freed pages back to the host.

    Why: on a VM with virtio-balloon free page reporting, the 1 GiB of page cache freed when the
    previous run's output is deleted is given back to the host a few seconds later; the next
    tool to write 1 GiB then pays a host fault per page (seconds of system time inside
    copy_folio_from_iter_atomic). Which run pays depends on timing, which made every tool's
    results bimodal. Returns the old value for restore_page_reporting."""
    try:
        with open(PAGE_REPORTING_ORDER) as f:
            old = f.read().strip()
        with open(PAGE_REPORTING_ORDER, "w") as f:
            f.write("11")
        print(f"free page reporting paused (page_reporting_order {old} -> 11)", file=sys.stderr)
        return old
    except OSError as error:
        sys.exit(f"--pause-page-reporting: {error}")

def restore_page_reporting(old):
    with open(PAGE_REPORTING_ORDER, "w") as f:
        f.write(old)
    print(f"free page reporting restored (page_reporting_order {old})", file=sys.stderr)

MANY_FILES_SCENARIOS = {"mixed", "small"}

def main():
    # The many-files scenarios (lists of files, each tool's own list mode) live in
    # many_files.py; `--scenarios mixed,small` here runs them with the same flags.
    if "--scenarios" in sys.argv:
        wanted = set(sys.argv[sys.argv.index("--scenarios") + 1].split(","))
        if wanted and wanted <= MANY_FILES_SCENARIOS:
            import many_files
            if "small" in wanted and os.geteuid() == 0 and "--fresh-fs" not in sys.argv:
                sys.argv += ["--fresh-fs", "small"]
            return many_files.main()
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", required=True)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default="uncapped,capped")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--tools", default="spate,spate-default,aria2c,axel,curl",
                    help="spate runs with -c CONNECTIONS; spate-default with no -c (self-tuning)")
    ap.add_argument("--out-dir", default=None, help="where outputs are written (default: WORK_DIR/out, on disk)")
    ap.add_argument("--work-dir", default="/tmp/spate-peers")
    ap.add_argument("--extra-spate", default="", help="extra arguments for spate")
    ap.add_argument("--spate-variants", default="", help="NAME=ARGS;NAME=ARGS: extra spate rows (ARGS may start with @PATH: another spate binary)")
    ap.add_argument("--pause-page-reporting", action="store_true",
                    help="root, VMs: stop the guest reporting free pages to the host during the run "
                         "(restored after); see docs/performance.md")
    args = ap.parse_args()

    size = parse_size(args.size)
    work = args.work_dir
    www = os.path.join(work, "www")
    os.makedirs(www, exist_ok=True)
    name = f"file-{args.size}.bin"
    src = os.path.join(www, name)
    make_file(src, size)
    expected = sha256_file(src)

    out_dir = args.out_dir or os.path.join(work, "out")
    os.makedirs(out_dir, exist_ok=True)

    ports = {"uncapped": 18190, "capped": 18191, "straggler": 18192}
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(work=work, www=www, port_uncapped=ports["uncapped"],
                                  port_capped=ports["capped"], port_straggler=ports["straggler"]))
    def stop_nginx(proc):
        proc.terminate()
        proc.wait()

    nginx = None
    reporting = pause_page_reporting() if args.pause_page_reporting else None
    try:
        c = str(args.connections)
        out = os.path.join(out_dir, "out.bin")
        tools = {
            "spate": [args.spate, "{url}", "-o", out, "-c", c, "-q", "--force"] + args.extra_spate.split(),
            "aria2c": ["aria2c", "-x16", "-s16", "-k1M", "-q", "--allow-overwrite=true", "-d", out_dir, "-o", "out.bin", "{url}"],
            "axel": ["axel", "-n", "16", "-q", "-o", out, "{url}"],
            "curl": ["curl", "-s", "-o", out, "{url}"],
            "wget2": ["wget2", "-q", "--no-robots", "-O", out, "{url}"],
        }
        # spate with no -c at all: its self-tuning picks the connection count.
        tools["spate-default"] = [args.spate, "{url}", "-o", out, "-q", "--force"] + args.extra_spate.split()
        order = [t for t in args.tools.split(",") if t in tools]
        for variant in filter(None, args.spate_variants.split(";")):
            vname, vargs = variant.split("=", 1)
            binary, vargs = args.spate, vargs.split()
            if vargs and vargs[0].startswith("@"):  # NAME=@/other/spate ARGS: A/B two builds
                binary, vargs = vargs[0][1:], vargs[1:]
            tools[vname] = [binary, "{url}", "-o", out, "-q", "--force"] + vargs
            order.append(vname)

        results = {}
        for scenario in args.scenarios.split(","):
            url = f"http://127.0.0.1:{ports[scenario]}/{name}"
            for run in range(args.runs):
                for tool in order:
                    if os.path.exists(out):
                        os.unlink(out)
                    # Start every run with no dirty pages from the previous one (not timed).
                    subprocess.run(["sync"])
                    cmd = [x.replace("{url}", url).replace("{sha256}", expected) for x in tools[tool]]
                    nginx = start_nginx(conf, work, ports.values())
                    wall, cpu, rss, status, err = run_timed(cmd)
                    stop_nginx(nginx)
                    nginx = None
                    ok = status == 0 and os.path.exists(out) and sha256_file(out) == expected
                    results.setdefault((scenario, tool), []).append((wall, cpu, rss, ok))
                    print(f"{scenario:10} run {run + 1} {tool:10} {wall:6.2f} s  {human_rate(size / wall):>11}  "
                          f"cpu {cpu:5.2f} s  rss {rss / 1024:5.1f} MiB  {'sha256 ok' if ok else 'WRONG OUTPUT/FAILED ' + err.strip()[:200]}",
                          file=sys.stderr, flush=True)
                    if os.path.exists(out):
                        os.unlink(out)

        gib = size / (1 << 30)
        print()
        print(f"{datetime.date.today()} · {platform.node()} · {os.cpu_count()} cores · file {args.size} · "
              f"median of {args.runs}, interleaved · outputs in {out_dir}"
              f"{' · free page reporting paused' if reporting else ''}")
        print()
        print("| scenario | tool | median time | throughput | CPU s/GiB | peak RSS | spate ÷ tool | all sha256 ok |")
        print("|---|---|---|---|---|---|---|---|")
        for scenario in args.scenarios.split(","):
            spate_med = statistics.median(r[0] for r in results[(scenario, "spate")]) if (scenario, "spate") in results else None
            for tool in order:
                rs = results[(scenario, tool)]
                med = statistics.median(r[0] for r in rs)
                cpu = statistics.median(r[1] for r in rs) / gib
                rss = max(r[2] for r in rs) / 1024
                ratio = f"{med / spate_med:.2f}×" if spate_med and tool != "spate" else "—"
                ok = "yes" if all(r[3] for r in rs) else "NO"
                print(f"| {scenario} | {tool} | {med:.2f} s | {human_rate(size / med)} | {cpu:.2f} | {rss:.1f} MiB | {ratio} | {ok} |")
        print()
        print("spate ÷ tool: the tool's median time divided by spate's (above 1 means spate is faster).")
        print(f"capped: nginx limit_rate 25m per connection; ideal with {args.connections} connections = "
              f"{args.connections * 25_000_000 / 1048576:.0f} MiB/s.")
    finally:
        if nginx:
            stop_nginx(nginx)
        if reporting:
            restore_page_reporting(reporting)

if __name__ == "__main__":
    main()
