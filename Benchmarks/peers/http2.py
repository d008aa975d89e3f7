#!/usr/bin/env python3
"""HTTP/2 against HTTP/1.1 over TLS, side by side: spate (default HTTP/1.1, and --http2), and
curl (one stream, HTTP/2) on nginx with `listen ... ssl http2` and a self-signed certificate.

Scenarios (outputs to /dev/shm, every output compared with the source; medians of --runs,
interleaved; CPU seconds per GiB from /usr/bin/time):
  tls         uncapped loopback over TLS 1.3
  tls-capped  every request (HTTP/1.1 connection, or HTTP/2 stream) paced at 25 MB/s by
              nginx's limit_rate (curl left out: one stream would take 40 s)

Usage: http2.py --spate PATH [--size 1G] [--runs 3] [--extra-spate "..."] [--pause-page-reporting]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import (NGINX_PREAMBLE, parse_size, make_file, run_timed, start_nginx,
                     pause_page_reporting, restore_page_reporting)

CONF = NGINX_PREAMBLE + """
    ssl_certificate {work}/cert.pem;
    ssl_certificate_key {work}/key.pem;
    ssl_protocols TLSv1.3;
    http2_max_concurrent_streams 128;
    server {{ listen 127.0.0.1:{port}  ssl http2; root {www}; }}
    server {{ listen 127.0.0.1:{port2} ssl http2; root {www}; limit_rate 25m; }}
}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", required=True)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--extra-spate", default="")
    ap.add_argument("--pause-page-reporting", action="store_true")
    args = ap.parse_args()
    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="spate-h2-")
    os.chmod(work, 0o755)  # nginx workers read www/ as another user
    www = os.path.join(work, "www")
    os.makedirs(www)
    src = os.path.join("/dev/shm", f"spate-h2-src-{size}.bin")
    make_file(src, size)
    os.link(src, os.path.join(www, "f.bin")) if os.stat(src).st_dev == os.stat(www).st_dev else shutil.copy(src, os.path.join(www, "f.bin"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port, port2 = 18901, 18902
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(work=work, www=www, port=port, port2=port2))
    nginx = start_nginx(conf, work, [port, port2])
    old = pause_page_reporting() if args.pause_page_reporting else None
    out = "/dev/shm/spate-h2-out.bin"
    extra = args.extra_spate.split()
    try:
        for name, p in (("tls", port), ("tls-capped", port2)):
            url = f"https://127.0.0.1:{p}/f.bin"
            tools = {
                "spate (HTTP/1.1)": [args.spate, url, "--cacert", f"{work}/cert.pem", "-o", out, "--force"] + extra,
                "spate --http2": [args.spate, url, "--http2", "--cacert", f"{work}/cert.pem", "-o", out, "--force"] + extra,
                "spate -c 16 --no-tuning (HTTP/1.1)": [args.spate, url, "-c", "16", "--no-tuning", "--cacert", f"{work}/cert.pem",
                                                       "-o", out, "--force"] + extra,
                "spate -c 16 --no-tuning --http2": [args.spate, url, "-c", "16", "--no-tuning", "--http2", "--cacert",
                                                    f"{work}/cert.pem", "-o", out, "--force"] + extra,
            }
            if name == "tls":  # one stream at 25 MB/s would take 40 s a run
                tools["curl --http2 (one stream)"] = ["curl", "-s", "--http2", "--cacert", f"{work}/cert.pem", "-o", out, url]
            results = {t: [] for t in tools}
            for _ in range(args.runs):
                for tool, cmd in tools.items():
                    if os.path.exists(out):
                        os.remove(out)
                    wall, cpu, rss, status, err = run_timed(cmd)
                    ok = status == 0 and subprocess.run(["cmp", "-s", src, out]).returncode == 0
                    if not ok:
                        print(f"  FAILED {tool}: {err.strip()[-300:]}", file=sys.stderr)
                        continue
                    results[tool].append((wall, cpu))
            print(f"== {name}: {size >> 20} MiB over TLS 1.3 from nginx (h2 offered); medians of {args.runs}")
            for tool, rs in results.items():
                if not rs:
                    print(f"  {tool:38s} failed")
                    continue
                wall = statistics.median(r[0] for r in rs)
                cpu = statistics.median(r[1] for r in rs)
                print(f"  {tool:38s} {wall:6.2f} s  {size / wall / 2**20:7.1f} MiB/s  {cpu / (size / 2**30):5.2f} CPU-s/GiB"
                      f"   runs: {', '.join(f'{r[0]:.2f}' for r in rs)}")
            sys.stdout.flush()
    finally:
        if os.path.exists(out):
            os.remove(out)
        nginx.terminate()
        nginx.wait()
        if old is not None:
            restore_page_reporting(old)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
